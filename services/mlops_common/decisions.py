"""The decision rule on a default probability, one for the API and the batch-scoring job."""

import numpy as np

# The two decisions as shared string objects: a row's decision is a reference to one of them, not a string of
# its own (the inference log's publisher keeps each request's decisions until their message is sent).
_DECISIONS = np.array(["approve", "reject"], dtype=object)


def decide(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """``reject`` where the probability is at least ``threshold``, else ``approve`` (an object array of str)."""
    return _DECISIONS[(probabilities >= threshold).astype(np.intp)]
