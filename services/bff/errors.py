"""Errors the request path turns into precise HTTP answers (never a 500 with a stack trace)."""


class EntityNotFoundError(LookupError):
    def __init__(self, entity_ids: list[int]):
        self.entity_ids = entity_ids
        super().__init__(f"SK_ID_CURR {', '.join(map(str, entity_ids))} not found in the online store")


class DependencyUnavailableError(RuntimeError):
    """Triton or the online store did not answer in time; the client may retry."""


class InferenceError(RuntimeError):
    """Triton refused a request the BFF built (wrong shape or type) or the model answered a probability
    outside [0, 1]: a bug or a broken model version, never the client's fault, and retrying cannot help
    (500, counted with the other 5xx, logged)."""
