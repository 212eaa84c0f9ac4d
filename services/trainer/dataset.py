"""Training rows: labels from the raw table, features from Feast's point-in-time join."""

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from feast import FeatureStore

from mlops_common.features import (
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    FEATURE_DTYPE,
    FEATURE_NAMES,
    FEATURE_SERVICE,
    LABEL,
)
from mlops_common.raw_tables import APPLICATION_TRAIN, RawDataError

log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """The training set cannot produce a meaningful model."""


@dataclass(frozen=True)
class TrainingSet:
    features: np.ndarray  # float32, columns in FEATURE_NAMES order
    labels: np.ndarray  # int64 0/1
    entity_ids: np.ndarray


def label_rows(applications: pd.DataFrame, label_time: datetime) -> pd.DataFrame:
    """Entity rows for the join: one per labelled applicant, stamped with when the label was known."""
    if applications.empty:
        raise TrainingDataError(f"{APPLICATION_TRAIN.filename}: no labelled rows to train on")
    bad = ~applications[LABEL].isin([0, 1])
    if bad.any():
        raise RawDataError(
            f"{APPLICATION_TRAIN.filename}: column {LABEL} must be 0 or 1; {int(bad.sum())} of "
            f"{len(applications)} rows are not (e.g. {applications[LABEL][bad].iloc[0]})"
        )
    classes = applications[LABEL].nunique()
    if classes < 2:
        raise TrainingDataError(
            f"{APPLICATION_TRAIN.filename}: column {LABEL} has a single class "
            f"({applications[LABEL].iloc[0]}) in all {len(applications)} rows; a classifier needs both"
        )
    rows = applications[[ENTITY_KEY, LABEL]].copy()
    rows[EVENT_TIMESTAMP] = pd.Timestamp(label_time)
    return rows


def point_in_time_features(store: FeatureStore, entity_rows: pd.DataFrame) -> pd.DataFrame:
    """Feature values as of each row's timestamp, one output row per input row, in input order.

    Feast's file offline store silently drops an entity whose feature rows all lie outside the
    view's TTL window. Merging the result back onto the input and counting turns that into a loud
    error instead of a training set that is quietly smaller (and biased).
    """
    service = store.get_feature_service(FEATURE_SERVICE)
    joined = store.get_historical_features(entity_df=entity_rows, features=service).to_df()
    result = entity_rows.merge(joined, on=[ENTITY_KEY, EVENT_TIMESTAMP], how="left", suffixes=("", "_joined"))
    if len(result) != len(entity_rows):
        raise TrainingDataError(
            f"point-in-time join returned {len(result)} rows for {len(entity_rows)} entity rows "
            f"(duplicated {ENTITY_KEY} in the label table?)"
        )
    missing_everything = result[list(FEATURE_NAMES)].isna().all(axis=1)
    if missing_everything.any():
        example = result.loc[missing_everything, ENTITY_KEY].iloc[0]
        raise TrainingDataError(
            f"{int(missing_everything.sum())} of {len(entity_rows)} labelled applicants have no feature values "
            f"at their label time (e.g. {ENTITY_KEY}={example}): run the feature pipeline, or check its "
            "event times against the label time"
        )
    return result


def training_set(store: FeatureStore, applications: pd.DataFrame, label_time: datetime) -> TrainingSet:
    rows = label_rows(applications, label_time)
    frame = point_in_time_features(store, rows)
    log.info("training set: %d rows, default rate %.4f", len(frame), frame[LABEL].mean())
    return TrainingSet(
        features=frame[list(FEATURE_NAMES)].to_numpy(dtype=FEATURE_DTYPE),
        labels=frame[LABEL].to_numpy(dtype=np.int64),
        entity_ids=frame[ENTITY_KEY].to_numpy(),
    )
