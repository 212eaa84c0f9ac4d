"""Drift and live-quality statistics against values worked out by hand, and on generated traffic:
unshifted traffic flags nothing, a shifted feature is flagged alone, joined labels give scikit-learn's AUC."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from mlops_common.drift import drift_report, join_outcomes, live_quality, psi
from mlops_common.features import FEATURE_NAMES
from mlops_common.ground_truth import LABEL_SCHEMA
from mlops_common.inference_log import TABLE_SCHEMA
from mlops_common.reference_profile import reference_profile

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def test_psi_of_known_fractions():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.1733 + 0.1014
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)
    # An empty bin is floored at 1e-4 instead of making the index infinite.
    assert psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx((1e-4 - 0.5) * np.log(1e-4 / 0.5) + 0.5 * np.log(2))
    with pytest.raises(ValueError, match="bins differ"):
        psi([0.5, 0.5], [1.0])


def logs(features: np.ndarray, probabilities: np.ndarray, entity_ids=None) -> pa.Table:
    n = len(probabilities)
    columns = {
        "schema_version": [2] * n,
        "request_id": [f"r{i}" for i in range(n)],
        "timestamp": [T0] * n,
        "entity_id": list(entity_ids) if entity_ids is not None else [None] * n,
        "model_name": ["credit_default"] * n,
        "model_version": ["1"] * n,
        **{name: features[:, i] for i, name in enumerate(FEATURE_NAMES)},
        "store_features": [[]] * n,
        "probability": probabilities,
        "decision": ["approve"] * n,
        "latency_ms": [1.0] * n,
        "role": ["champion"] * n,
        "date": ["2026-06-01"] * n,
    }
    return pa.Table.from_pydict(columns, schema=TABLE_SCHEMA)


def test_unshifted_traffic_flags_nothing_and_a_shifted_feature_is_flagged_alone():
    rng = np.random.default_rng(11)
    training = rng.normal(size=(20_000, len(FEATURE_NAMES)))
    holdout_scores = rng.beta(1, 9, size=4_000)
    profile = reference_profile(training, holdout_scores)

    same = drift_report(profile, logs(rng.normal(size=(3_000, len(FEATURE_NAMES))), rng.beta(1, 9, size=3_000)))
    assert same.drifted_features == []
    assert max(d.psi for d in same.features.values()) < 0.05
    assert same.score_psi < 0.05

    shifted_features = rng.normal(size=(3_000, len(FEATURE_NAMES)))
    income = FEATURE_NAMES.index("AMT_INCOME_TOTAL")
    shifted_features[:, income] = shifted_features[:, income] * 1.6 + 1.0
    bureau = FEATURE_NAMES.index("bureau_credit_days_enddate_mean")
    shifted_features[: 3_000 // 2, bureau] = np.nan  # half the applicants without bureau history
    shifted = drift_report(profile, logs(shifted_features, rng.beta(2, 5, size=3_000)))
    # The income by its PSI; the bureau mean by its missing rate alone (its present values did not move).
    assert shifted.drifted_features == ["AMT_INCOME_TOTAL", "bureau_credit_days_enddate_mean"]
    assert shifted.features["bureau_credit_days_enddate_mean"].missing_rate_change == pytest.approx(0.5)
    assert shifted.features["bureau_credit_days_enddate_mean"].psi < 0.05
    assert shifted.score_psi >= 0.2
    assert shifted.score_drifted

    # A missing rate that moves less than the threshold is no drift.
    few_missing = rng.normal(size=(3_000, len(FEATURE_NAMES)))
    few_missing[:150, bureau] = np.nan  # 5 %
    assert drift_report(profile, logs(few_missing, rng.beta(1, 9, size=3_000))).drifted_features == []


def test_live_quality_on_joined_labels_matches_scikit_learn():
    rng = np.random.default_rng(3)
    probabilities = rng.uniform(size=200)
    entity_ids = np.arange(200)
    table = logs(np.zeros((200, len(FEATURE_NAMES))), probabilities, entity_ids)
    outcomes = (rng.uniform(size=200) < probabilities).astype(int)
    labels = pa.Table.from_pydict(
        {
            # Applicants 0..149 labelled after the prediction, 150..179 before it (not joined), 180.. never.
            "applicant_id": list(range(180)),
            "outcome": outcomes[:180].tolist(),
            "observed_at": [T0 + timedelta(days=30)] * 150 + [T0 - timedelta(days=1)] * 30,
            "recorded_at": [T0] * 180,
        },
        schema=LABEL_SCHEMA,
    )
    joined = join_outcomes(table, labels)
    assert sorted(joined["entity_id"].to_pylist()) == list(range(150))
    order = np.argsort(joined["entity_id"].to_numpy())
    quality = live_quality(joined["probability"].to_numpy()[order], joined["outcome"].to_numpy()[order])
    assert quality.rows == 150
    assert quality.roc_auc == pytest.approx(roc_auc_score(outcomes[:150], probabilities[:150]))
    assert quality.observed_rate == pytest.approx(outcomes[:150].mean())


def test_calibration_of_a_perfectly_calibrated_and_a_biased_model():
    p = np.array([0.2] * 10 + [0.8] * 10)
    y = np.array([1] * 2 + [0] * 8 + [1] * 8 + [0] * 2)
    calibrated = live_quality(p, y)
    assert calibrated.expected_calibration_error == pytest.approx(0.0)
    assert calibrated.mean_probability == pytest.approx(calibrated.observed_rate)
    # Predicting 0.5 for everyone where half default: calibrated on average, AUC 0.5.
    flat = live_quality(np.full(4, 0.5), np.array([0, 1, 0, 1]))
    assert flat.roc_auc == pytest.approx(0.5)
    assert flat.expected_calibration_error == pytest.approx(0.0)
    biased = live_quality(np.full(4, 0.9), np.array([0, 1, 0, 1]))
    assert biased.expected_calibration_error == pytest.approx(0.4)
    assert live_quality(np.array([0.3, 0.4]), np.array([0, 0])).roc_auc is None
