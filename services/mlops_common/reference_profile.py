"""The reference profile of a model version: what its training data and its scores looked like. The
trainer stores it with the version (MLflow artifact ``reference_profile.json``); the monitor measures
drift in the served traffic against the data this very version learned from, in the same bins.

Per feature: quantile bin edges of the training rows (deciles; repeated edges collapse, so a feature
with few distinct values gets fewer bins), the fraction of non-missing training rows in each bin, and the
missing rate (NaN: the model treats missing values natively). For the score: fixed bins over [0, 1] of
the holdout's default probabilities as the exported ONNX model computes them, the artifact Triton serves.
Bins are half-open ``[edge_i, edge_i+1)``, the first from -inf and the last to +inf, so every value a
request can send falls into exactly one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlops_common.features import FEATURE_NAMES

PROFILE_ARTIFACT = "reference_profile.json"
PROFILE_FORMAT = 1
FEATURE_QUANTILES = 10
SCORE_BIN_EDGES = tuple(round(i / 20, 2) for i in range(1, 20))  # 0.05 .. 0.95, plus the two open ends


def bin_fractions(values: np.ndarray, inner_edges: np.ndarray) -> list[float]:
    """Fraction of the non-missing ``values`` in each bin ``(-inf, e1), [e1, e2), ..., [ek, +inf)``."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return [0.0] * (len(inner_edges) + 1)
    counts = np.bincount(np.searchsorted(inner_edges, present, side="right"), minlength=len(inner_edges) + 1)
    return (counts / present.size).tolist()


def feature_profile(values: np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    quantiles = np.linspace(0, 1, FEATURE_QUANTILES + 1)[1:-1]
    edges = np.unique(np.quantile(present, quantiles)) if present.size else np.array([])
    return {
        "inner_edges": edges.tolist(),
        "fractions": bin_fractions(values, edges),
        "missing_rate": float(1 - present.size / values.size) if values.size else 0.0,
        "rows": int(values.size),
    }


def reference_profile(training_features: np.ndarray, holdout_scores: np.ndarray) -> dict[str, Any]:
    """The profile of a training matrix (columns in feature-contract order) and the holdout's scores."""
    if training_features.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"expected {len(FEATURE_NAMES)} feature columns, got {training_features.shape[1]}")
    edges = np.array(SCORE_BIN_EDGES)
    return {
        "format": PROFILE_FORMAT,
        "features": {name: feature_profile(training_features[:, i]) for i, name in enumerate(FEATURE_NAMES)},
        "score": {
            "inner_edges": list(SCORE_BIN_EDGES),
            "fractions": bin_fractions(np.asarray(holdout_scores, dtype=np.float64), edges),
            "rows": len(holdout_scores),
        },
    }
