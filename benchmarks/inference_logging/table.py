"""Inference-log table: write throughput and end-to-end lag (issue 10), in one run.

    .venv/bin/python benchmarks/inference_logging/table.py --out benchmarks/results/inference_log_table.md

1. Write throughput: ``write_inference_log_rows`` (the log worker's MERGE on ``request_id``) merges
   batches of ``--batch-rows`` synthetic records into a fresh table on the platform's SeaweedFS, one
   commit each, nothing else running against it; the records are stamped as a steady load of
   ``--rows-per-s`` would stamp them. Reported per stretch of commits (1-10, 11-50, 51-``--commits``)
   as small files pile up, then once more after ``maintain_table`` (what ``python -m
   log_worker.maintenance`` runs) has compacted them. At the end of each stretch the last batch is
   merged again (a redelivery: it must insert 0 rows) and DuckDB reads every request id. The same is
   then done, in a second fresh table, with the MERGE as it was before, which compared each batch
   with the whole day's partition instead of the rows of its own time range. Last, writes of 1,000,
   5,000, 20,000, 50,000 and 100,000 rows taking turns, each written into two fresh tables, one with
   deltalake's default encoding and one with the table's own (``TABLE_WRITER_PROPERTIES``): the cost of one
   write by its size and encoding.
2. End-to-end lag: ``/predict`` on the platform's BFF (logging on) at a fixed concurrency for
   ``--duration`` s, the real log worker with its default settings writing the table. Each answer's
   ``request_id`` and arrival time are kept; a thread polls the table with DuckDB (``delta_scan``)
   every ``--poll-interval`` s and notes when each id first shows. At the end every served id must be
   in the table exactly once (rows == distinct == served): reported, and the exit status is 1 if not.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import random
import resource
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.loadgen import LoadResult, run_load
from benchmarks.stack import (
    ROOT,
    BenchPlatform,
    command_line,
    cpu_seconds,
    feature_bodies,
    load_average,
    machine_summary,
    settings_from,
    work_dir,
    write_report,
)
from log_worker.maintenance import MaintenanceReport, maintain_table
from log_worker.settings import Settings as LogWorkerSettings
from mlops_common.delta import delta_storage_options, merge_new_rows
from mlops_common.duckdb_s3 import connect_duckdb
from mlops_common.inference_log import (
    PARTITION_COLUMNS,
    TABLE_WRITER_PROPERTIES,
    InferenceLogRecord,
    InferenceLogStoreSettings,
    open_inference_log_table,
    records_to_table,
    write_inference_log_rows,
)

log = logging.getLogger("benchmarks.inference_log_table")

# Part 1 writes tables of its own beside the one the log worker fills in part 2.
WRITE_PREFIX = "bench-write-throughput"
REDELIVERIES = 3
# Rows per write: a small batch, the worker's BATCH_MAX_RECORDS of earlier versions (5,000, 20,000) and now
# (50,000), and its BATCH_BACKLOG_MAX_RECORDS now (100,000).
BATCH_SIZES = (1_000, 5_000, 20_000, 50_000, 100_000)


def scan_ids(con: duckdb.DuckDBPyConnection, uri: str) -> list[str]:
    """Every request id in the table, read by DuckDB like any reader would (the poller's query)."""
    escaped = uri.replace("'", "''")
    return con.execute(f"SELECT request_id FROM delta_scan('{escaped}')").to_arrow_table()["request_id"].to_pylist()


def percentiles(label: str, values_ms: list[float]) -> LoadResult:
    """A LoadResult over any durations, for its p50/p99 (the same percentile rule as the load figures)."""
    return LoadResult(label, 1, 1, len(values_ms), 0, 0.0, tuple(values_ms))


# -- 1. write throughput ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Stretch:
    label: str
    merges_s: tuple[float, ...]
    inserted: int
    files: int
    table_rows: int
    scan_ms: float
    redelivered_s: tuple[float, ...]
    redelivered_inserted: int

    @property
    def rows_per_s(self) -> float:
        return self.inserted / sum(self.merges_s)


@dataclass(frozen=True)
class WriteResult:
    stretches: list[Stretch]
    compaction_s: float
    compaction: MaintenanceReport
    retention_days: float


def synthetic_batch(
    bodies: list[dict[str, float]], rng: random.Random, model_name: str, model_version: str, at: dt.datetime
):
    """``len(bodies)`` records as the BFF logs them (body features, fresh request ids, stamped ``at``), as
    table rows."""
    records = []
    for features in bodies:
        probability = rng.random()
        records.append(
            InferenceLogRecord(
                request_id=uuid.uuid4().hex,
                timestamp=at,
                features=features,
                model_name=model_name,
                model_version=model_version,
                probability=probability,
                decision="reject" if probability >= 0.5 else "approve",
                latency_ms=rng.uniform(3, 15),
            )
        )
    return records_to_table(records)


def worker_merge(settings: InferenceLogStoreSettings, rows: pa.Table, table: DeltaTable) -> int:
    """The log worker's MERGE: the batch's time range, on the table it keeps open."""
    return write_inference_log_rows(settings, rows, table=table)


def whole_partition_merge(settings: InferenceLogStoreSettings, rows: pa.Table, _: DeltaTable) -> int:
    """The log worker's MERGE as it was before: every row of the batch's partitions compared, whatever its
    time, on a fresh read of the table."""
    return merge_new_rows(
        settings.inference_log_table_uri,
        rows,
        key="request_id",
        partition_by=PARTITION_COLUMNS,
        options=delta_storage_options(settings),
    )


MERGES = {"the log worker's MERGE": worker_merge, "before: the whole partition": whole_partition_merge}


def measure_writes(
    settings: LogWorkerSettings,
    model_name: str,
    model_version: str,
    commits: int,
    after: int,
    batch_rows: int,
    rows_per_s: float,
    merge=worker_merge,
) -> WriteResult:
    options = delta_storage_options(settings)
    uri = settings.inference_log_table_uri
    table = open_inference_log_table(settings)
    con = connect_duckdb(settings)
    con.execute("SET threads=1")
    bodies = feature_bodies(batch_rows)
    rng = random.Random(5)
    # One day's partition from its midnight on, a batch every batch_rows / rows_per_s seconds.
    midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    done = 0

    def stretch(label: str, count: int) -> Stretch:
        nonlocal done
        merges, inserted = [], 0
        batch: pa.Table | None = None
        for k in range(done, done + count):
            at = midnight + dt.timedelta(seconds=k * batch_rows / rows_per_s)
            batch = synthetic_batch(bodies, rng, model_name, model_version, at)
            started = time.perf_counter()
            inserted += merge(settings, batch, table)
            merges.append(time.perf_counter() - started)
        done += count
        assert batch is not None
        redelivered, again = [], 0
        for _ in range(REDELIVERIES):
            started = time.perf_counter()
            again += merge(settings, batch, table)
            redelivered.append(time.perf_counter() - started)
        files = len(DeltaTable(uri, storage_options=options).file_uris())
        started = time.perf_counter()
        rows = len(scan_ids(con, uri))
        scan_ms = (time.perf_counter() - started) * 1000
        result = Stretch(label, tuple(merges), inserted, files, rows, scan_ms, tuple(redelivered), again)
        log.info(
            "%s: %.0f rows/s, %d files, redelivery %.0f ms",
            label,
            result.rows_per_s,
            files,
            statistics.median(redelivered) * 1000,
        )
        return result

    stretches = []
    for mark in sorted({m for m in (10, 50) if m < commits} | {commits}):
        stretches.append(stretch(f"{done + 1}-{mark}", mark - done))
    started = time.perf_counter()
    compaction = maintain_table(uri, options, settings.table_retention_days, TABLE_WRITER_PROPERTIES)
    compaction_s = time.perf_counter() - started
    assert compaction is not None
    log.info("compaction in %.1f s: %s", compaction_s, compaction)
    if after:
        stretches.append(stretch(f"{done + 1}-{done + after} (after compaction)", after))
    return WriteResult(stretches, compaction_s, compaction, settings.table_retention_days)


# The data files' encoding: deltalake's defaults (before) and the table's own (now).
ENCODINGS = {
    "dictionaries up to 1 MiB (before)": None,
    "dictionaries up to 8 KiB (now)": TABLE_WRITER_PROPERTIES,
}


@dataclass(frozen=True)
class SizedWrite:
    rows: int
    encoding: str
    seconds: float
    cpu_s: float  # this process' user + system time: deltalake's Rust threads do the work


def measure_batch_sizes(
    settings: LogWorkerSettings, model_name: str, model_version: str, sizes: tuple[int, ...], repeats: int
) -> tuple[list[SizedWrite], dict[str, float]]:
    """``write_inference_log_rows``' MERGE of batches of each size into a fresh table per encoding, the sizes and
    encodings taking turns (the cost of one write: what ``BATCH_BACKLOG_MAX_RECORDS`` trades on); and the bytes
    per row of each table's data files at the end."""
    options = delta_storage_options(settings)
    tables = {}
    for i, encoding in enumerate(ENCODINGS):
        encoding_settings = settings.model_copy(update={"logs_prefix": f"{settings.logs_prefix}-{i}"})
        tables[encoding] = (encoding_settings.inference_log_table_uri, open_inference_log_table(encoding_settings))
    rng = random.Random(6)
    bodies = feature_bodies(max(sizes))
    midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    writes = []
    for k in range(repeats * len(sizes)):
        size = sizes[k % len(sizes)]
        batch = synthetic_batch(bodies[:size], rng, model_name, model_version, midnight + dt.timedelta(minutes=k))
        for encoding in ENCODINGS if k % 2 == 0 else reversed(ENCODINGS):
            uri, table = tables[encoding]
            cpu_before, started = process_cpu_s(), time.perf_counter()
            merge_new_rows(
                uri,
                batch,
                key="request_id",
                partition_by=PARTITION_COLUMNS,
                options=options,
                time_column="timestamp",
                table=table,
                writer_properties=ENCODINGS[encoding],
            )
            writes.append(SizedWrite(size, encoding, time.perf_counter() - started, process_cpu_s() - cpu_before))
    bytes_per_row = {}
    for encoding, (uri, _) in tables.items():
        files = pa.table(DeltaTable(uri, storage_options=options).get_add_actions(flatten=True))
        bytes_per_row[encoding] = pc.sum(files["size_bytes"]).as_py() / pc.sum(files["num_records"]).as_py()
    return writes, bytes_per_row


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def batch_size_section(writes: list[SizedWrite], bytes_per_row: dict[str, float]) -> list[str]:
    sizes = sorted({w.rows for w in writes})
    repeats = len(writes) // (len(sizes) * len(ENCODINGS))

    def median(size: int, encoding: str, attribute: str) -> float:
        return statistics.median(getattr(w, attribute) for w in writes if w.rows == size and w.encoding == encoding)

    before, now = ENCODINGS
    defaults = LogWorkerSettings.model_fields
    lines = [
        "**Cost of one write by its size and encoding** (the log worker's MERGE into a fresh table per encoding, "
        f"the sizes and encodings taking turns, {repeats} writes of each; medians): under load the log worker writes "
        f"`BATCH_MAX_RECORDS` rows at a time ({defaults['batch_max_records'].default:,}; 20,000 and 5,000 in "
        "earlier versions), and everything waiting, up to `BATCH_BACKLOG_MAX_RECORDS` "
        f"({defaults['batch_backlog_max_records'].default:,}), when it is behind. CPU: this process' user + "
        "system time over the write "
        "(deltalake's Rust threads). The table's writer gives up a column's dictionary once it passes 8 KiB "
        "(`TABLE_WRITER_PROPERTIES`); before, deltalake's default kept it up to 1 MiB, so a column of distinct "
        "values (request ids, times, probabilities, most features) was dictionary-encoded whole. The synthetic "
        "bodies are one example's ten features scaled by 0.5-1.5 and rounded to integers (four of them span "
        "under 1,000 values) and each batch has one timestamp: small dictionaries, so the bytes per row below "
        "favour them more than traffic of distinct times and continuous features would.",
        "",
        "| rows per write | encoding | ms per write | CPU ms per write | CPU µs per row | ÷ the smallest write (ms) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for encoding in ENCODINGS:
        base = median(sizes[0], encoding, "seconds")
        for size in sizes:
            ms, cpu_ms = median(size, encoding, "seconds") * 1000, median(size, encoding, "cpu_s") * 1000
            lines.append(
                f"| {size:,} | {encoding} | {ms:.0f} | {cpu_ms:.0f} | {cpu_ms / size * 1000:.1f} | "
                f"{ms / 1000 / base:.2f} |"
            )
    largest = sizes[-1]
    lines += [
        "",
        f"Now ÷ before at {largest:,} rows: CPU per write "
        f"{median(largest, now, 'cpu_s') / median(largest, before, 'cpu_s'):.2f}, time per write "
        f"{median(largest, now, 'seconds') / median(largest, before, 'seconds'):.2f}; bytes per row of the data "
        f"files: {bytes_per_row[now]:.0f} now, {bytes_per_row[before]:.0f} before "
        f"({bytes_per_row[now] / bytes_per_row[before]:.2f}).",
        "",
    ]
    return lines


# -- 2. end-to-end lag -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Poll:
    started: float
    finished: float
    rows: int
    cpu_s: float


class TablePoller:
    """Reads every request id of the table with DuckDB (one DuckDB thread) every ``interval_s``, in a
    thread of its own; ``first_seen[id]`` is the ``perf_counter`` at which the poll that first
    returned the id finished."""

    def __init__(self, settings: InferenceLogStoreSettings, interval_s: float) -> None:
        self._settings = settings
        self._interval_s = interval_s
        self.first_seen: dict[str, float] = {}
        self.polls: list[Poll] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="table-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        con = connect_duckdb(self._settings)
        con.execute("SET threads=1")
        uri = self._settings.inference_log_table_uri
        while not self._stop.is_set():
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                ids = scan_ids(con, uri)
            except duckdb.Error:  # the worker has not created the table yet
                ids = []
            finished = time.perf_counter()
            for request_id in ids:
                self.first_seen.setdefault(request_id, finished)
            self.polls.append(Poll(started, finished, len(ids), time.thread_time() - cpu))
            self._stop.wait(max(0.0, self._interval_s - (finished - started)))


@dataclass(frozen=True)
class LagResult:
    load: LoadResult
    served: int
    # (which answers, their lags): all, those up to BATCH_MAX_AGE_S before the load stopped, the rest
    lags: list[tuple[str, LoadResult]]
    not_visible: int
    load_s: float
    rows_by_load_end: int
    served_by_load_end: int
    visible_at_s: float  # seconds from load start to the last poll before the load ended
    drain_s: float  # from the last answer to the poll that showed its last row
    polls: list[Poll]
    poll_interval_s: float
    table: dict[str, int]
    worker: dict[str, float]
    delivered: dict[str, float]

    @property
    def exactly_once(self) -> bool:
        """Every answer's id in the table once, and nothing else: rows == distinct == served."""
        t = self.table
        counts = (t["rows"], t["distinct"], t["served"], t["served_distinct"], t["served_in_table"])
        return len(set(counts)) == 1 and t["not_served"] == 0


async def drive(url: str, concurrency: int, duration_s: float, responses: list[tuple[float, bytes]]) -> LoadResult:
    bodies = feature_bodies(1000)
    return await run_load(
        f"{url}/predict",
        lambda i: bodies[i % len(bodies)],
        concurrency=concurrency,
        max_requests=1_000_000,
        duration_s=duration_s,
        warmup_requests=50,
        label="logging on",
        on_response=lambda body: responses.append((time.perf_counter(), body)),
    )


def measure_lag(
    platform: BenchPlatform,
    concurrency: int,
    duration_s: float,
    interval_s: float,
    drain_timeout_s: float,
    batch_age_s: float,
) -> LagResult:
    settings = settings_from(InferenceLogStoreSettings, platform.env)
    uri = settings.inference_log_table_uri
    worker = platform.start_log_worker()
    bff = platform.start_bff("bff", inference_logging=True)
    worker_metrics = f"http://127.0.0.1:{platform.env['LOG_WORKER_METRICS_PORT']}/metrics"
    names = {
        "batches": "log_worker_batches_written_total",
        "written": "log_worker_records_written_total",
        "already_written": "log_worker_records_already_written_total",
        "write_s_sum": "log_worker_batch_write_seconds_sum",
        "write_s_count": "log_worker_batch_write_seconds_count",
    }
    before = {key: platform.metric(worker_metrics, name) for key, name in names.items()}
    worker_cpu = cpu_seconds(worker.pid())
    poller = TablePoller(settings, interval_s)
    poller.start()
    responses: list[tuple[float, bytes]] = []
    try:
        load_start = time.perf_counter()
        load = asyncio.run(drive(bff.url, concurrency, duration_s, responses))
        load_end = time.perf_counter()
        log.info("load: %d answers, %.0f req/s; waiting for the table", len(responses), load.requests_per_s)
        served = [(arrived, json.loads(body)["request_id"]) for arrived, body in responses]
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline and any(rid not in poller.first_seen for _, rid in served):
            time.sleep(interval_s)
    finally:
        poller.stop()
    worker_cpu = cpu_seconds(worker.pid()) - worker_cpu
    after = {key: platform.metric(worker_metrics, name) for key, name in names.items()}
    worker_delta = {key: after[key] - before[key] for key in names} | {"cpu_s": worker_cpu}
    delivered = {
        outcome: platform.metric(bff.metrics_url, f'bff_inference_log_records_total{{outcome="{outcome}"}}')
        for outcome in ("enqueued", "confirmed", "spooled", "dropped")
    }

    con = connect_duckdb(settings)
    escaped = uri.replace("'", "''")
    rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT request_id) FROM delta_scan('{escaped}')").fetchone()
    in_table = set(scan_ids(con, uri))
    served_ids = {rid for _, rid in served}
    table = {
        "rows": rows,
        "distinct": distinct,
        "served": len(served),
        "served_distinct": len(served_ids),
        "served_in_table": len(served_ids & in_table),
        "not_served": len(in_table - served_ids),
    }

    seen = poller.first_seen
    lags = [(arrived, (seen[rid] - arrived) * 1000) for arrived, rid in served if rid in seen]
    not_visible = len(served) - len(lags)
    # Once the load stops, the last, partial batch waits for its age: those answers are a tail of their own.
    tail_from = load_end - batch_age_s
    groups = [
        ("all answers", [lag for _, lag in lags]),
        (f"up to {batch_age_s:g} s before the load stopped", [lag for t, lag in lags if t <= tail_from]),
        (f"in the last {batch_age_s:g} s of the load", [lag for t, lag in lags if t > tail_from]),
    ]
    before_end = [p for p in poller.polls if p.finished <= load_end]
    last = before_end[-1] if before_end else poller.polls[0]
    return LagResult(
        load=load,
        served=len(served),
        lags=[(label, percentiles(label, values)) for label, values in groups],
        not_visible=not_visible,
        load_s=load_end - load_start,
        rows_by_load_end=last.rows,
        served_by_load_end=sum(1 for arrived, _ in served if arrived <= last.finished),
        visible_at_s=last.finished - load_start,
        drain_s=max(seen[rid] for _, rid in served) - served[-1][0] if served and not_visible == 0 else float("nan"),
        polls=list(poller.polls),
        poll_interval_s=interval_s,
        table=table,
        worker=worker_delta,
        delivered=delivered,
    )


# -- report ----------------------------------------------------------------------------------------
def write_section(results: dict[str, WriteResult], batch_rows: int, rows_per_s: float) -> list[str]:
    seconds_apart = batch_rows / rows_per_s
    lines = [
        "## 1. Table write throughput",
        "",
        f"Batches of {batch_rows:,} rows (one partition: one model "
        "version, one day) merged into a fresh table on the platform's SeaweedFS, one commit each, nothing else "
        f"writing; each batch stamped {seconds_apart:g} s after the one before, from midnight on (a steady load of "
        f"{rows_per_s:,.0f} rows/s; the day's partition grows, while a minute holds "
        f"{60 / seconds_apart:,.0f} batches). rows/s = rows inserted / time in the merge calls of the stretch "
        "(building the batches is not counted). At the end of each stretch the stretch's last batch is merged "
        f"again {REDELIVERIES} times (a redelivered batch: it inserts 0 rows) and DuckDB reads every request id "
        "of the table (the lag poller's query below). The two MERGEs ran one after the other, each into a table "
        "of its own: the log worker's (`write_inference_log_rows`: the rows of the batch's range of timestamps, "
        "on the table it keeps open) and the one it replaced (every row of the partition, on a fresh read of the "
        "table).",
        "",
    ]
    for name, result in results.items():
        c = result.compaction
        lines += [
            f"**{name}**",
            "",
            "| commits | rows/s | merge p50 ms | merge max ms | data files after | rows after "
            "| redelivered batch ms (median) | rows it inserted | DuckDB scan ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {s.label} | {s.rows_per_s:,.0f} | {statistics.median(s.merges_s) * 1000:.0f} "
                f"| {max(s.merges_s) * 1000:.0f} | {s.files} | {s.table_rows:,} "
                f"| {statistics.median(s.redelivered_s) * 1000:.0f} | {s.redelivered_inserted} | {s.scan_ms:.0f} |"
                for s in result.stretches
            ),
            "",
            f"Compaction (`maintain_table`, as `python -m log_worker.maintenance` runs it: compact, checkpoint, "
            f"vacuum with the default {result.retention_days:g}-day retention, so no file was old enough to be "
            f"deleted): {result.compaction_s:.1f} s, data files {c.files_before} -> {c.files_after}, {c.rows:,} "
            f"rows, {c.vacuumed} files deleted.",
            "",
        ]
    return lines


def lag_section(result: LagResult, worker_settings: LogWorkerSettings, concurrency: int) -> list[str]:
    load, t, w, d = result.load, result.table, result.worker, result.delivered
    poll_ms = [(p.finished - p.started) * 1000 for p in result.polls]
    poll_cpu = sum(p.cpu_s for p in result.polls)
    poll_span = result.polls[-1].finished - result.polls[0].started if result.polls else float("nan")
    batches = w["batches"]
    return [
        "## 2. End-to-end lag",
        "",
        f"`/predict` with all features in the body, closed loop, concurrency {concurrency}, {load.elapsed_s:.0f} s "
        f"measured after {result.served - load.requests} warm-up requests (the answers and rows below count "
        "them too); the real log worker with its default settings "
        f"(`BATCH_MAX_RECORDS={worker_settings.batch_max_records}`, "
        f"`BATCH_MAX_AGE_S={worker_settings.batch_max_age_s:g}`). Lag = the end of the first DuckDB poll that "
        "returned the request id - the arrival of the prediction's answer at the client "
        f"(polls every {result.poll_interval_s:g} s).",
        "",
        "| answers | errors | req/s (BFF) | HTTP p50 ms | HTTP p99 ms | table rows/s during load |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {result.served:,} | {load.errors} | {load.requests_per_s:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} "
        f"| {result.rows_by_load_end / result.visible_at_s:,.0f} |",
        "",
        "| lag of the answers | answers | lag p50 ms | lag p99 ms | lag max ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {label} | {lag.requests:,} | {lag.p50_ms:,.0f} | {lag.p99_ms:,.0f} "
            f"| {max(lag.latencies_ms, default=float('nan')):,.0f} |"
            for label, lag in result.lags
        ),
        "",
        f"- req/s: answers of the measured part over its duration. Table rows/s: rows visible at the last poll "
        f"before the load stopped ({result.rows_by_load_end:,}, {result.visible_at_s:.1f} s after it started, on "
        f"an empty table), when {result.served_by_load_end:,} answers had arrived: "
        f"{result.served_by_load_end - result.rows_by_load_end:,} rows still on their way. The last row showed "
        f"{result.drain_s:.1f} s after the last answer: when the load stops, the worker writes its last, partial "
        f"batch only once it is `BATCH_MAX_AGE_S` old, so the answers of the load's last "
        f"{worker_settings.batch_max_age_s:g} s are shown apart as well (the first row pools them with the rest).",
        f"- Exactly once: {'**yes**' if result.exactly_once else '**no**'}: the table holds {t['rows']:,} rows, "
        f"{t['distinct']:,} distinct request ids; {t['served']:,} answers ({t['served_distinct']:,} distinct ids), "
        f"{t['served_in_table']:,} of them in the table, {t['not_served']} ids in the table that no answer carried; "
        f"{result.not_visible} answers whose row never showed during the run.",
        f"- BFF: {d['enqueued']:,.0f} records enqueued, {d['confirmed']:,.0f} confirmed by RabbitMQ, "
        f"{d['spooled']:,.0f} spooled, {d['dropped']:,.0f} dropped. Log worker: {batches:,.0f} merges, "
        f"{w['written'] / batches if batches else float('nan'):,.0f} rows each on average, "
        f"{w['write_s_sum'] / w['write_s_count'] * 1000 if w['write_s_count'] else float('nan'):,.0f} ms per merge "
        f"on average (`log_worker_batch_write_seconds`), {w['already_written']:,.0f} records already in the table, "
        f"{w['cpu_s']:.1f} s of CPU ({w['cpu_s'] / w['written'] * 1e6 if w['written'] else float('nan'):,.0f} us "
        "per row).",
        f"- Poller: {len(result.polls)} polls, {statistics.median(poll_ms):.0f} ms median and {max(poll_ms):.0f} ms "
        f"longest, {poll_cpu:.1f} s of CPU in its thread ({poll_cpu / poll_span * 100:.0f} % of one core over "
        f"{poll_span:.0f} s).",
        "",
    ]


def report(
    command, platform, writes, sizes, lag, args, worker_settings, took_s: float, load_at_start: str, load_mid: str
) -> str:
    machine = machine_summary()
    poll_ms = statistics.median((p.finished - p.started) * 1000 for p in lag.polls)
    fill_s = worker_settings.batch_max_records / lag.load.requests_per_s
    if fill_s < worker_settings.batch_max_age_s:
        fill = f"a batch filled in about {fill_s:.1f} s, before its age was up"
    else:
        fill = f"the age wrote the batches ({fill_s:.1f} s to fill one)"
    lines = [
        "# Inference-log table: write throughput and end-to-end lag",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        f"- Command: `{command}` (whole run up to the report, platform start included: {took_s:.0f} s)",
        f"- Machine: {machine['nproc']} CPUs (`nproc`; shared cores, not dedicated), {machine['cpu']}, "
        f"Python {machine['python']}, no GPU. Load average (1/5/15 min) before the run: {load_at_start}; after "
        f"part 1: {load_mid}; after part 2: {machine['loadavg']}.",
        f"- Model: Triton `{platform.model_name}` v{platform.model_version} (Python backend), champion trained in this "
        "run on synthetic data",
        "- Table: Delta Lake (`deltalake`) on the platform's own SeaweedFS, partitioned by model name, version and "
        "day; readers: DuckDB `delta_scan` (extension from its wheel)",
        "",
        *write_section(writes, args.batch_rows, args.rows_per_s),
        *batch_size_section(*sizes),
        *lag_section(lag, worker_settings, args.concurrency),
        "## Caveats",
        "",
        "- 2 shared cores: the load generator, the BFF, Triton, RabbitMQ, the log worker, SeaweedFS, the poller "
        "(and in part 1 the merging process and SeaweedFS) all run on them, next to other sessions' work (load "
        "average above). In the cluster the worker, S3 and the readers have machines of their own; the figures "
        "say what this machine does, and move between runs.",
        f"- Lag resolution: a row counts as visible when the poll that first returns it *ends*; it became "
        f"visible after the previous poll started, so the true lag is lower by up to one poll interval "
        f"({lag.poll_interval_s:g} s) plus a poll's duration ({poll_ms:.0f} ms median here).",
        "- The poller's own cost: each poll reads every request id of the table (DuckDB, one thread, in the "
        "benchmark process), so it takes CPU from the BFF and the worker during the load (its share is above) and "
        "grows with the table; part 1's DuckDB column shows how it grows with the number of files.",
        f"- Batch age: the worker ran with its defaults, as deployed (`BATCH_MAX_RECORDS="
        f"{worker_settings.batch_max_records}`, `BATCH_MAX_AGE_S={worker_settings.batch_max_age_s:g}`). A batch "
        f"is written when it holds {worker_settings.batch_max_records:,} records or its oldest is "
        f"{worker_settings.batch_max_age_s:g} s old, so at a load under "
        f"{worker_settings.batch_max_records / worker_settings.batch_max_age_s:,.0f} records/s the age bounds "
        "the lag from below (up to that many seconds of waiting plus the merge); above it the batch fills first. "
        f"Here, at {lag.load.requests_per_s:,.0f} answers/s, {fill}. A smaller age lowers the lag at low load at "
        "the price of more, smaller commits (more small files: part 1).",
        "- Part 1 writes one partition with one process and no reader; with two workers racing, a lost commit "
        "is merged again (not measured here). A redelivered batch runs the same MERGE as a first delivery "
        "(it reads the files of its time range to find that every record is there); compare its column with "
        "merge p50.",
        "- The log worker's MERGE is pinned to the partitions of its batch and to the batch's range of "
        "timestamps: file statistics skip every data file outside that range. What still grows with the commits "
        "is the number of data files whose statistics a merge checks, until compaction. The MERGE it replaced "
        "looked up every row's request id in the whole partition (random ids: file statistics cannot narrow "
        "that search), so its cost grew with the day's rows and files as well.",
        "- Compaction ran with nothing writing; in production it races the workers (a lost commit is retried).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference_log_table.md")
    parser.add_argument("--commits", type=int, default=100, help="merges into the fresh table before compaction")
    parser.add_argument("--after-compaction", type=int, default=10, help="merges after compaction")
    parser.add_argument("--batch-rows", type=int, default=1000, help="rows per merge in part 1")
    parser.add_argument(
        "--rows-per-s", type=float, default=100.0, help="part 1 stamps its batches as a steady load of this many rows/s"
    )
    parser.add_argument("--size-repeats", type=int, default=5, help="writes of each size in part 1's last table")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of /predict load in part 2")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between table polls")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="wait for the last rows at most this")
    parser.add_argument("--keep-work", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = command_line("benchmarks/inference_logging/table.py")
    started = time.monotonic()
    load_at_start = load_average()
    with work_dir("inference-log-table-", keep=args.keep_work) as work, BenchPlatform.up(work) as platform:
        worker_settings = settings_from(LogWorkerSettings, platform.env)
        writes = {
            name: measure_writes(
                settings_from(LogWorkerSettings, {**platform.env, "LOGS_PREFIX": f"{WRITE_PREFIX}-{i}"}),
                platform.model_name,
                str(platform.model_version),
                args.commits,
                args.after_compaction,
                args.batch_rows,
                args.rows_per_s,
                merge,
            )
            for i, (name, merge) in enumerate(MERGES.items())
        }
        sizes, bytes_per_row = measure_batch_sizes(
            settings_from(LogWorkerSettings, {**platform.env, "LOGS_PREFIX": f"{WRITE_PREFIX}-sizes"}),
            platform.model_name,
            str(platform.model_version),
            BATCH_SIZES,
            args.size_repeats,
        )
        load_mid = load_average()
        lag = measure_lag(
            platform,
            args.concurrency,
            args.duration,
            args.poll_interval,
            args.drain_timeout,
            worker_settings.batch_max_age_s,
        )
        took = time.monotonic() - started
        text = report(
            command, platform, writes, (sizes, bytes_per_row), lag, args, worker_settings, took, load_at_start, load_mid
        )
    write_report(args.out, text)
    return 0 if lag.exactly_once else 1


if __name__ == "__main__":
    sys.exit(main())
