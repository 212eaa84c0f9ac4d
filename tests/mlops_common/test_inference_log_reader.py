"""``read_inference_logs`` on a real SeaweedFS: time range, partitions, de-duplication, model filter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devstack.components import S3Server
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import (
    PARQUET_SCHEMA,
    InferenceLogRecord,
    InferenceLogStoreSettings,
    list_log_objects,
    object_key,
    partition_of,
    read_inference_logs,
    records_to_table,
    table_to_parquet,
)
from mlops_common.s3 import s3_client

pytestmark = pytest.mark.integration

T0 = datetime(2026, 2, 28, 22, 30, tzinfo=UTC)


def record(request_id: str, at: datetime, *, model: str = "credit_default", probability: float = 0.5):
    return InferenceLogRecord(
        request_id=request_id,
        timestamp=at,
        features=dict.fromkeys(FEATURE_NAMES, 2.0),
        model_name=model,
        model_version="1",
        probability=probability,
        decision="approve",
        latency_ms=1.0,
    )


@pytest.fixture
def log_store(s3_server: S3Server) -> Iterator[InferenceLogStoreSettings]:
    bucket = s3_server.new_bucket("logs")
    settings = InferenceLogStoreSettings(**s3_server.settings().model_dump(), logs_bucket=bucket, logs_prefix="il")
    yield settings
    client = s3_client(settings)
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


def write(settings: InferenceLogStoreSettings, records: list[InferenceLogRecord]) -> str:
    """One object, as the worker writes it (records of one partition)."""
    key = object_key(settings.logs_prefix, partition_of(records[0]), [r.request_id for r in records])
    body = table_to_parquet(records_to_table(records))
    s3_client(settings).put_object(Bucket=settings.logs_bucket, Key=key, Body=body)
    return key


def test_reads_a_time_range_across_hours_and_days_deduplicated(log_store):
    before = record("before", T0 - timedelta(hours=2))
    first = record("first", T0)  # 22:30 on Feb 28
    late = record("late", T0 + timedelta(minutes=29, seconds=59))  # 22:59:59
    next_day = record("next-day", T0 + timedelta(hours=2))  # 00:30 on Mar 1
    at_end = record("at-end", T0 + timedelta(hours=3))  # excluded: the end is exclusive
    other_model = record("other-model", T0 + timedelta(minutes=1), model="challenger")
    write(log_store, [before])
    write(log_store, [first, late])
    # A redelivered batch written under another composition: "first" twice, the earlier copy wins.
    write(log_store, [record("first", T0, probability=0.9), record("extra", T0 + timedelta(minutes=5))])
    write(log_store, [next_day])
    write(log_store, [at_end])
    write(log_store, [other_model])

    start, end = T0, T0 + timedelta(hours=3)
    frame = read_inference_logs(log_store, start, end)
    assert list(frame.columns) == PARQUET_SCHEMA.names
    assert list(frame["request_id"]) == ["first", "other-model", "extra", "late", "next-day"]
    assert frame["request_id"].is_unique
    assert frame.loc[frame["request_id"] == "first", "probability"].item() in (0.5, 0.9)

    only = read_inference_logs(log_store, start, end, model_name="challenger")
    assert list(only["request_id"]) == ["other-model"]
    # Objects of hours that do not overlap the range are not even read.
    keys = list_log_objects(s3_client(log_store), log_store.logs_bucket, "il", start, end)
    assert len(keys) == 5
    assert not [key for key in keys if "hour=20" in key]


def test_an_empty_range_gives_an_empty_frame_with_the_schema(log_store):
    frame = read_inference_logs(log_store, T0, T0 + timedelta(hours=1))
    assert frame.empty
    assert list(frame.columns) == PARQUET_SCHEMA.names


def test_naive_datetimes_are_refused(log_store):
    with pytest.raises(ValueError, match="timezone-aware"):
        read_inference_logs(log_store, T0.replace(tzinfo=None), T0)
