from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from feature_store.transform import application_features, bureau_features
from mlops_common.features import FEATURE_DTYPE, FeatureGroup, feature_names

T = datetime(2024, 1, 1, tzinfo=UTC)


def test_bureau_aggregates_on_hand_made_rows():
    bureau = pd.DataFrame(
        {
            "SK_ID_CURR": [1, 1, 1, 2],
            "SK_ID_BUREAU": [10, 11, 12, 20],
            "CREDIT_ACTIVE": ["Active", "Closed", "Active", "Closed"],
            "DAYS_CREDIT_ENDDATE": [100.0, -300.0, np.nan, -50.0],
            "AMT_CREDIT_SUM": [1000.0, 2000.0, 500.0, 10.0],
            "AMT_CREDIT_SUM_OVERDUE": [0.0, 30.0, 0.0, 0.0],
        }
    )
    out = bureau_features(bureau, pd.Series([1, 2, 3]), event_time=T, created_time=T).set_index("SK_ID_CURR")
    assert out.loc[1, "bureau_credit_count"] == 3
    assert out.loc[1, "bureau_credit_active_count"] == 2
    assert out.loc[1, "bureau_credit_days_enddate_mean"] == -100.0  # NaN end dates are skipped
    assert out.loc[1, "bureau_amt_credit_sum"] == 3500.0
    assert out.loc[1, "bureau_amt_credit_sum_overdue"] == 30.0
    # An applicant without bureau history: zero counts and sums, unknown mean.
    assert out.loc[3, ["bureau_credit_count", "bureau_credit_active_count", "bureau_amt_credit_sum"]].tolist() == [
        0,
        0,
        0,
    ]
    assert np.isnan(out.loc[3, "bureau_credit_days_enddate_mean"])
    assert set(out.columns) >= set(feature_names(FeatureGroup.BUREAU))
    assert all(out[c].dtype == FEATURE_DTYPE for c in feature_names(FeatureGroup.BUREAU))
    assert (out.event_timestamp == pd.Timestamp(T)).all()


def test_application_features_are_float32_and_keep_ids():
    apps = pd.DataFrame(
        {
            "SK_ID_CURR": [5, 6],
            "AMT_INCOME_TOTAL": [1.0, 2.0],
            "AMT_CREDIT": [3.0, 4.0],
            "AMT_ANNUITY": [np.nan, 5.0],
            "DAYS_BIRTH": [-1.0, -2.0],
            "DAYS_EMPLOYED": [365243.0, -3.0],
        }
    )
    out = application_features(apps, event_time=T, created_time=T)
    assert out.SK_ID_CURR.tolist() == [5, 6]
    assert all(out[c].dtype == FEATURE_DTYPE for c in feature_names(FeatureGroup.APPLICATION))


def test_duplicate_applicants_are_refused():
    apps = pd.DataFrame({"SK_ID_CURR": [5, 5], **{c: [1.0, 1.0] for c in feature_names(FeatureGroup.APPLICATION)}})
    with pytest.raises(ValueError, match=r"SK_ID_CURR is duplicated in the application tables \(1 of 2 rows, e.g. 5\)"):
        application_features(apps, event_time=T, created_time=T)
