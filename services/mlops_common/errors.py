"""Errors of a dependency call that its callers tell apart: the BFF answers them with a 503 or a 500, the
batch-scoring job retries the first and fails on the second."""


class DependencyUnavailableError(RuntimeError):
    """Triton or the online store did not answer in time; the caller may retry."""


class InferenceError(RuntimeError):
    """Triton refused a request the caller built (wrong shape or type) or the model answered a probability
    outside [0, 1]: a bug or a broken model version, never the client's fault, and retrying cannot help."""
