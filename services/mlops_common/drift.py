"""Drift and live quality of served traffic against a version's reference profile
(``mlops_common.reference_profile``): the statistics the monitor exports, as plain functions.

- PSI (population stability index) per feature and of the score: ``sum((a - e) * ln(a / e))`` over the
  profile's bins, ``e`` the training fraction and ``a`` the live fraction of a bin. Both are floored at
  ``PSI_FLOOR`` first (an empty bin would make it infinite), as is usual. Rule of thumb: < 0.1 stable,
  0.1-0.2 moderate, >= 0.2 significant (``DRIFT_PSI_THRESHOLD``). Missing values are not a bin: their
  share is compared on its own, and a feature whose share moves by ``MISSING_RATE_THRESHOLD`` drifts too.
- Live quality, once outcomes are known: ROC AUC and log loss (scikit-learn) and calibration (mean
  predicted probability vs observed default rate, and the expected calibration error over ten bins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn.metrics import log_loss, roc_auc_score

from mlops_common.features import FEATURE_NAMES
from mlops_common.reference_profile import bin_fractions

PSI_FLOOR = 1e-4
DRIFT_PSI_THRESHOLD = 0.2
# A feature also drifts when its share of missing values moves this much (PSI ignores missing values).
MISSING_RATE_THRESHOLD = 0.1
CALIBRATION_BINS = 10


def psi(expected: list[float] | np.ndarray, actual: list[float] | np.ndarray) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape[0]} expected fractions, {a.shape[0]} actual")
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float
    missing_rate_reference: float
    missing_rate_live: float
    drifted: bool
    live_fractions: list[float]  # share of the non-missing live values in each of the profile's bins

    @property
    def missing_rate_change(self) -> float:
        return self.missing_rate_live - self.missing_rate_reference


@dataclass(frozen=True)
class DriftReport:
    rows: int
    features: dict[str, FeatureDrift]
    score_psi: float
    score_fractions: list[float]  # share of the live scores in each of the profile's score bins
    threshold: float

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, drift in self.features.items() if drift.drifted]

    @property
    def score_drifted(self) -> bool:
        return self.score_psi >= self.threshold


def feature_drift(
    name: str, reference: dict[str, Any], live: np.ndarray, threshold: float, missing_threshold: float
) -> FeatureDrift:
    live = np.asarray(live, dtype=np.float64)
    fractions = bin_fractions(live, np.asarray(reference["inner_edges"]))
    value = psi(reference["fractions"], fractions)
    missing = float(np.isnan(live).mean()) if live.size else 0.0
    drifted = value >= threshold or abs(missing - reference["missing_rate"]) >= missing_threshold
    return FeatureDrift(name, value, reference["missing_rate"], missing, drifted, fractions)


def drift_report(
    profile: dict[str, Any],
    logs: pa.Table,
    *,
    threshold: float = DRIFT_PSI_THRESHOLD,
    missing_threshold: float = MISSING_RATE_THRESHOLD,
) -> DriftReport:
    """Drift of logged predictions (inference-log rows of one model version) against its profile."""
    if logs.num_rows == 0:
        raise ValueError("no logged predictions to compare with the reference profile")
    features = {
        name: feature_drift(
            name, profile["features"][name], logs[name].to_numpy(zero_copy_only=False), threshold, missing_threshold
        )
        for name in FEATURE_NAMES
    }
    scores = logs["probability"].to_numpy(zero_copy_only=False)
    score_fractions = bin_fractions(scores, np.asarray(profile["score"]["inner_edges"]))
    return DriftReport(
        logs.num_rows, features, psi(profile["score"]["fractions"], score_fractions), score_fractions, threshold
    )


@dataclass(frozen=True)
class LiveQuality:
    rows: int
    positives: int
    roc_auc: float | None  # None while the labelled rows hold one class only
    log_loss: float
    mean_probability: float
    observed_rate: float
    expected_calibration_error: float


def live_quality(probabilities: np.ndarray, outcomes: np.ndarray) -> LiveQuality:
    """Quality of predictions whose outcomes are known (1: defaulted)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.int64)
    if p.size == 0 or p.shape != y.shape:
        raise ValueError(f"need as many outcomes as probabilities, at least one: {p.size} and {y.size}")
    bins = np.minimum((p * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    gaps = [abs(p[bins == b].mean() - y[bins == b].mean()) * np.mean(bins == b) for b in np.unique(bins)]
    return LiveQuality(
        rows=int(p.size),
        positives=int(y.sum()),
        roc_auc=float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else None,
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        mean_probability=float(p.mean()),
        observed_rate=float(y.mean()),
        expected_calibration_error=float(np.sum(gaps)),
    )


def join_outcomes(logs: pa.Table, labels: pa.Table) -> pa.Table:
    """The logged predictions of applicants with a known outcome observed after the prediction, with
    an ``outcome`` column (predictions made with the features in the body carry no applicant id and
    cannot be joined)."""
    # Arrow's join carries no list columns; the quality needs none.
    logs = logs.drop_columns([name for name in logs.column_names if pa.types.is_list(logs.schema.field(name).type)])
    joined = logs.filter(pa.compute.is_valid(logs["entity_id"])).join(
        labels.select(["applicant_id", "outcome", "observed_at"]), keys="entity_id", right_keys="applicant_id"
    )
    return joined.filter(pa.compute.greater_equal(joined["observed_at"], joined["timestamp"]))
