"""Delta Lake tables on the platform's S3 (``deltalake``): storage options, creation, exactly-once merges.

Why Delta Lake (measured on this machine, ``../shared/notes/log-table-on-this-machine.md``): a racing
writer's commit is a conditional ``PUT`` of the next ``_delta_log`` entry, so several writers need no
lock service and no catalog; the loser gets ``CommitFailedError`` and reruns its merge. Spark, Trino,
Athena and DuckDB read the table as it is.

Rows are inserted only by ``merge_new_rows``: a MERGE on the key, restricted to the partitions the
batch touches, that inserts the keys the table does not hold yet. Plain appends would bypass that,
so nothing here appends.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, Field, WriterProperties
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from mlops_common.settings import S3Settings

# Concurrent writers retry a lost commit; each attempt re-reads the table.
MERGE_ATTEMPTS = 30


class TableSchemaError(RuntimeError):
    """The table at the URI exists with columns other than the ones this code writes."""


def delta_storage_options(settings: S3Settings, *, timeout_s: float = 30.0) -> dict[str, str]:
    """``object_store`` options for ``deltalake`` (its own S3 client, not boto3's)."""
    # Each request is bounded by timeout_s, and its retries together by about three of them (object_store's
    # defaults, 10 retries within 180 s, would hold a caller for minutes while S3 hangs).
    options = {
        "AWS_REGION": settings.aws_default_region,
        "timeout": f"{timeout_s}s",
        "connect_timeout": f"{timeout_s}s",
        "max_retries": "3",
        "retry_timeout": f"{3 * timeout_s}s",
    }
    if settings.s3_endpoint_url:
        options["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
        options["AWS_ALLOW_HTTP"] = str(settings.s3_endpoint_url.startswith("http://")).lower()
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        options["AWS_ACCESS_KEY_ID"] = settings.aws_access_key_id
        options["AWS_SECRET_ACCESS_KEY"] = settings.aws_secret_access_key.get_secret_value()
    return options


def _check_schema(table: DeltaTable, schema: pa.Schema, uri: str) -> None:
    found = {field.name: field.type for field in pa.schema(table.schema().to_arrow())}
    expected = {field.name: field.type for field in schema}
    if found.keys() != expected.keys():
        missing, unknown = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
        raise TableSchemaError(f"Delta table {uri} has other columns: missing {missing}, unknown {unknown}")


def _add_later_columns(table: DeltaTable, schema: pa.Schema, added_later: Sequence[str]) -> bool:
    """Add the nullable columns of ``added_later`` that a table made by an older version lacks (its
    old rows read them as null); True if it changed the table."""
    found = set(pa.schema(table.schema().to_arrow()).names)
    new = [schema.field(name) for name in added_later if name not in found]
    if not new:
        return False
    table.alter.add_columns([Field.from_arrow(field.with_nullable(True)) for field in new])
    return True


def open_table(
    uri: str,
    schema: pa.Schema,
    partition_by: Sequence[str],
    options: dict[str, str],
    *,
    added_later: Sequence[str] = (),
) -> DeltaTable:
    """The Delta table at ``uri``, created empty with ``schema`` if there is none (several processes
    may race to create it: one commit wins, the others open it). Columns of ``added_later`` missing
    from an older table are added. Raises ``TableSchemaError`` when an existing table has other
    columns."""
    for _ in range(MERGE_ATTEMPTS):
        try:
            table = DeltaTable(uri, storage_options=options)
        except TableNotFoundError:
            try:
                table = DeltaTable.create(
                    uri, schema, mode="ignore", partition_by=list(partition_by), storage_options=options
                )
            except CommitFailedError:
                continue
        try:
            if _add_later_columns(table, schema, added_later):
                table = DeltaTable(uri, storage_options=options)
        except CommitFailedError:
            continue
        _check_schema(table, schema, uri)
        return table
    raise CommitFailedError(f"could not create or open the Delta table {uri}")


def first_per_key(batch: pa.Table, key: str | Sequence[str]) -> pa.Table:
    """The first row of each key (one column or several), in the batch's order (MERGE would insert every
    copy of a key that occurs twice in its source)."""
    keys = [key] if isinstance(key, str) else list(key)
    # Nearly always every key is distinct, and counting one column's distinct values says so at a third of the
    # group-by's cost (a null is not counted: such a batch takes the group-by).
    if pc.count_distinct(batch[keys[0]]).as_py() == batch.num_rows:
        return batch
    positions = batch.select(keys).append_column("_position", pa.array(range(batch.num_rows)))
    first = positions.group_by(keys, use_threads=False).aggregate([("_position", "min")])["_position_min"]
    if len(first) == batch.num_rows:
        return batch
    return batch.take(pc.take(first, pc.sort_indices(first)))


def _sql_list(values: Sequence[Any]) -> str:
    return ", ".join("'" + str(value).replace("'", "''") + "'" for value in values)


def merge_new_rows(
    uri: str,
    batch: pa.Table,
    *,
    key: str,
    partition_by: Sequence[str],
    options: dict[str, str],
    time_column: str | None = None,
    attempts: int = MERGE_ATTEMPTS,
    table: DeltaTable | None = None,
    writer_properties: WriterProperties | None = None,
) -> int:
    """Insert the rows of ``batch`` the table does not hold yet; return how many. A row is held when
    one has its ``key`` (and, with ``time_column``, the same time). ``writer_properties``: how the new
    data files are encoded (deltalake's defaults without).

    Exactly once per key (and time) within a partition, whoever else writes: the MERGE is pinned to
    the partitions that occur in the batch (IN-lists built from its own values, so none is missed),
    and a commit lost to a concurrent writer is retried on the table's latest version. With
    ``time_column`` it is also pinned to the batch's range of times, so Delta's file statistics skip
    every data file outside it (without it, every merge reads the whole partition, and grows slower
    with it). A writer that merges again and again passes its open ``table``: it is brought up to
    date before each attempt (see ``retry_lost_commits``)."""
    keys = [key] if time_column is None else [key, time_column]
    # One record batch: delta-rs handles each chunk on its own, and a batch concatenated from many small
    # messages' rows (single predictions) merged several times slower.
    batch = first_per_key(batch, keys).combine_chunks()
    if batch.num_rows == 0:
        return 0
    conditions = [f"t.{column} IN ({_sql_list(pc.unique(batch[column]).to_pylist())})" for column in partition_by]
    if time_column is not None:
        earliest, latest = (value.as_py() for value in pc.min_max(batch[time_column]).values())
        conditions += [f"t.{time_column} >= '{earliest.isoformat()}'", f"t.{time_column} <= '{latest.isoformat()}'"]
    predicate = " AND ".join([*conditions, *(f"t.{column} = s.{column}" for column in keys)])

    def insert_new(table: DeltaTable) -> dict[str, Any]:
        merger = table.merge(batch, predicate, source_alias="s", target_alias="t", writer_properties=writer_properties)
        return merger.when_not_matched_insert_all().execute()

    return int(retry_lost_commits(uri, options, insert_new, attempts, table)["num_target_rows_inserted"])


def upsert_rows(uri: str, batch: pa.Table, *, key: str, newer: str, options: dict[str, str]) -> dict[str, int]:
    """Insert new keys; replace the row of a key the table holds when the batch's row is at least as
    new by the ``newer`` column (so replays and out-of-order writes settle on the newest row). Within
    the batch too the newest copy of a key wins (the last one on a tie). Retried like
    ``merge_new_rows``; returns the counts ``inserted``, ``updated`` and ``unchanged`` (keys whose
    stored row is newer and kept)."""
    positions = pa.array(range(batch.num_rows))
    newest_first = pc.sort_indices(
        batch.append_column("_position", positions), [(newer, "descending"), ("_position", "descending")]
    )
    batch = first_per_key(batch.take(newest_first), key).combine_chunks()

    def upsert(table: DeltaTable) -> dict[str, Any]:
        merger = table.merge(batch, f"t.{key} = s.{key}", source_alias="s", target_alias="t")
        merger = merger.when_matched_update_all(predicate=f"s.{newer} >= t.{newer}")
        return merger.when_not_matched_insert_all().execute()

    metrics = retry_lost_commits(uri, options, upsert, MERGE_ATTEMPTS)
    inserted, updated = int(metrics["num_target_rows_inserted"]), int(metrics["num_target_rows_updated"])
    return {"inserted": inserted, "updated": updated, "unchanged": batch.num_rows - inserted - updated}


def retry_lost_commits(
    uri: str,
    options: dict[str, str],
    operation: Callable[[DeltaTable], dict[str, Any]],
    attempts: int,
    table: DeltaTable | None = None,
) -> dict[str, Any]:
    """Run ``operation`` on the latest version of the table until its commit wins over concurrent
    writers: a fresh read, or ``table`` brought up to date (it reads only the log entries it has not
    seen, where a fresh read replays the log from its last checkpoint)."""
    for attempt in range(attempts):
        try:
            if table is None:
                return operation(DeltaTable(uri, storage_options=options))
            table.update_incremental()
            return operation(table)
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.05, 0.3))
    raise ValueError("attempts must be at least 1")
