"""Raw tables -> feature tables. Pure functions: no I/O, so they are tested on hand-made frames."""

from datetime import datetime

import numpy as np
import pandas as pd

from mlops_common.features import (
    CREATED_TIMESTAMP,
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    FEATURE_DTYPE,
    FeatureGroup,
    feature_names,
)


def _with_timestamps(frame: pd.DataFrame, event_time: datetime, created_time: datetime) -> pd.DataFrame:
    frame[EVENT_TIMESTAMP] = pd.Timestamp(event_time)
    frame[CREATED_TIMESTAMP] = pd.Timestamp(created_time)
    return frame


def application_features(applications: pd.DataFrame, *, event_time: datetime, created_time: datetime) -> pd.DataFrame:
    """One row per applicant (train and test alike) with the application feature columns."""
    duplicated = applications[ENTITY_KEY].duplicated()
    if duplicated.any():
        example = applications[ENTITY_KEY][duplicated].iloc[0]
        raise ValueError(
            f"{ENTITY_KEY} is duplicated in the application tables "
            f"({int(duplicated.sum())} of {len(applications)} rows, e.g. {example})"
        )
    columns = feature_names(FeatureGroup.APPLICATION)
    features = applications[[ENTITY_KEY, *columns]].copy()
    features[list(columns)] = features[list(columns)].astype(FEATURE_DTYPE)
    return _with_timestamps(features.reset_index(drop=True), event_time, created_time)


def bureau_features(
    bureau: pd.DataFrame, applicant_ids: pd.Series, *, event_time: datetime, created_time: datetime
) -> pd.DataFrame:
    """Bureau aggregates for every applicant; applicants without bureau history get zero counts.

    Computing a row for every applicant (not only those in bureau.csv) means "no history" is a
    value the model learns from, and the point-in-time join never returns a missing row for them.
    """
    active = (bureau["CREDIT_ACTIVE"] == "Active").astype(np.int64)
    grouped = bureau.assign(_active=active).groupby(ENTITY_KEY)
    aggregates = pd.DataFrame(
        {
            "bureau_credit_count": grouped.size(),
            "bureau_credit_active_count": grouped["_active"].sum(),
            "bureau_credit_days_enddate_mean": grouped["DAYS_CREDIT_ENDDATE"].mean(),
            "bureau_amt_credit_sum": grouped["AMT_CREDIT_SUM"].sum(),
            "bureau_amt_credit_sum_overdue": grouped["AMT_CREDIT_SUM_OVERDUE"].sum(),
        }
    )
    ids = pd.Index(applicant_ids.unique(), name=ENTITY_KEY)
    features = aggregates.reindex(ids)
    zero_when_absent = [
        "bureau_credit_count",
        "bureau_credit_active_count",
        "bureau_amt_credit_sum",
        "bureau_amt_credit_sum_overdue",
    ]
    features[zero_when_absent] = features[zero_when_absent].fillna(0)
    columns = list(feature_names(FeatureGroup.BUREAU))
    features = features[columns].astype(FEATURE_DTYPE).reset_index()
    return _with_timestamps(features, event_time, created_time)
