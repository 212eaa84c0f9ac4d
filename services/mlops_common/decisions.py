"""The decision rule on a default probability, one for the API and the batch-scoring job."""

import numpy as np


def decide(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """``reject`` where the probability is at least ``threshold``, else ``approve``."""
    return np.where(probabilities >= threshold, "reject", "approve")
