"""The inference-log Delta table on a real SeaweedFS: exactly-once writes (redeliveries, in-batch
duplicates, two writer processes at once), time range, partition pruning, model filter."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from devstack.components import S3Server
from mlops_common.delta import TableSchemaError, delta_storage_options
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import (
    TABLE_SCHEMA,
    InferenceLogRecord,
    InferenceLogStoreSettings,
    load_inference_log_table,
    open_inference_log_table,
    read_inference_logs,
    records_to_table,
    write_inference_log_rows,
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


def write(settings: InferenceLogStoreSettings, records: list[InferenceLogRecord]) -> int:
    """One commit, as the worker writes a batch."""
    open_inference_log_table(settings)
    return write_inference_log_rows(settings, records_to_table(records))


def test_reads_a_time_range_across_days_each_request_once(log_store):
    before = record("before", T0 - timedelta(hours=2))  # same day, outside the range
    first = record("first", T0)  # 22:30 on Feb 28
    late = record("late", T0 + timedelta(minutes=29, seconds=59))  # 22:59:59
    next_day = record("next-day", T0 + timedelta(hours=2))  # 00:30 on Mar 1
    at_end = record("at-end", T0 + timedelta(hours=3))  # excluded: the end is exclusive
    other_model = record("other-model", T0 + timedelta(minutes=1), model="challenger")
    days_before = record("days-before", T0 - timedelta(days=2))
    assert write(log_store, [before]) == 1
    assert write(log_store, [first, late]) == 2
    # A redelivered record in a batch of another composition: only the new one is inserted.
    assert write(log_store, [record("first", T0, probability=0.9), record("extra", T0 + timedelta(minutes=5))]) == 1
    for single in (next_day, at_end, other_model, days_before):
        assert write(log_store, [single]) == 1

    start, end = T0, T0 + timedelta(hours=3)
    frame = read_inference_logs(log_store, start, end)
    assert list(frame.columns) == TABLE_SCHEMA.names
    assert list(frame["request_id"]) == ["first", "other-model", "extra", "late", "next-day"]
    assert frame.loc[frame["request_id"] == "first", "probability"].item() == 0.5
    assert list(frame["date"]) == ["2026-02-28"] * 4 + ["2026-03-01"]

    only = read_inference_logs(log_store, start, end, model_name="challenger")
    assert list(only["request_id"]) == ["other-model"]
    # Only the date partitions of the range are read: not the file of two days before.
    _, files = load_inference_log_table(log_store, start, end)
    assert files == 6


def test_in_batch_duplicates_are_one_row_and_the_first_copy_wins(log_store):
    batch = [record("a", T0, probability=0.1), record("b", T0), record("a", T0, probability=0.7)]
    assert write(log_store, batch) == 2
    frame = read_inference_logs(log_store, T0, T0 + timedelta(hours=1))
    assert sorted(frame["request_id"]) == ["a", "b"]
    assert frame.loc[frame["request_id"] == "a", "probability"].item() == 0.1


def test_a_record_is_one_row_whichever_batch_brings_it_again(log_store):
    """The MERGE reads only the batch's time range: a copy of a record still finds it there, in a batch of
    its own or spanning hours; a client's second request with the same id is a row of its own."""
    first = T0 - timedelta(hours=5)
    assert write(log_store, [record("once", first)]) == 1
    assert write(log_store, [record("once", first)]) == 0
    assert write(log_store, [record("before", first - timedelta(hours=1)), record("once", first)]) == 1
    assert write(log_store, [record("once", first), record("after", first + timedelta(hours=2))]) == 1
    assert write(log_store, [record("once", first + timedelta(seconds=1))]) == 1
    frame = read_inference_logs(log_store, first - timedelta(hours=2), T0)
    assert list(frame["request_id"]) == ["before", "once", "once", "after"]


def _write_batches(settings: InferenceLogStoreSettings, writer: int, batches: int, size: int) -> int:
    inserted = 0
    for b in range(batches):
        shared = [record(f"shared-{b}-{i}", T0 + timedelta(seconds=i)) for i in range(size)]
        own = [record(f"w{writer}-{b}-{i}", T0 + timedelta(days=i % 2)) for i in range(size)]
        inserted += write_inference_log_rows(settings, records_to_table(shared + own))
    return inserted


def test_two_writer_processes_at_once_insert_each_request_id_once(log_store):
    open_inference_log_table(log_store)
    batches, size = 8, 100
    # spawn: deltalake's runtime does not survive a fork.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        inserted = list(pool.map(_write_batches, [log_store] * 2, [1, 2], [batches] * 2, [size] * 2))
    expected = batches * size * 3  # the shared ids once, each writer's own ids
    assert sum(inserted) == expected
    table, _ = load_inference_log_table(log_store, T0 - timedelta(days=1), T0 + timedelta(days=3))
    assert table.num_rows == expected
    assert pa.compute.count_distinct(table["request_id"]).as_py() == expected


def test_a_table_with_other_columns_is_refused(log_store):
    from deltalake import write_deltalake

    write_deltalake(
        log_store.inference_log_table_uri,
        pa.table({"request_id": ["x"]}),
        storage_options=delta_storage_options(log_store),
    )
    with pytest.raises(TableSchemaError, match="missing"):
        open_inference_log_table(log_store)


def test_a_table_made_before_the_role_column_gets_it_and_keeps_its_rows(log_store):
    from deltalake import DeltaTable, write_deltalake

    from mlops_common.inference_log import PARTITION_COLUMNS

    old_rows = records_to_table([record("old-1", T0)]).drop_columns(["role"])
    options = delta_storage_options(log_store)
    write_deltalake(
        log_store.inference_log_table_uri, old_rows, partition_by=list(PARTITION_COLUMNS), storage_options=options
    )
    shadow = record("new-1~shadow", T0 + timedelta(seconds=1)).model_copy(update={"role": "shadow"})
    assert write(log_store, [shadow]) == 1
    assert "role" in DeltaTable(log_store.inference_log_table_uri, storage_options=options).schema().to_arrow().names
    table, _ = load_inference_log_table(log_store, T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert list(zip(table["request_id"].to_pylist(), table["role"].to_pylist(), strict=True)) == [
        ("old-1", None),
        ("new-1~shadow", "shadow"),
    ]


def test_an_empty_range_gives_an_empty_frame_with_the_schema(log_store):
    frame = read_inference_logs(log_store, T0, T0 + timedelta(hours=1))
    assert frame.empty
    assert list(frame.columns) == TABLE_SCHEMA.names


def test_naive_datetimes_are_refused(log_store):
    with pytest.raises(ValueError, match="timezone-aware"):
        read_inference_logs(log_store, T0.replace(tzinfo=None), T0)
