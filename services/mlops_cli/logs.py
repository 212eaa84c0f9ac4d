"""``mlops logs query``: the inference-log table (Delta Lake in S3) queried with DuckDB.

The rows of the time range are read with the platform's reader
(``mlops_common.inference_log.load_inference_log_table``: only the date partitions of the range) and
DuckDB applies the filters to that Arrow table. The table holds each request id once, so there is
nothing to de-duplicate here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from log_worker.reader import parse_time
from mlops_cli.errors import CliError
from mlops_cli.settings import Settings
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import load_inference_log_table

RESULT_COLUMNS = (
    "timestamp",
    "request_id",
    "applicant_id",
    "model_name",
    "model_version",
    "probability",
    "decision",
    "latency_ms",
    *FEATURE_NAMES,
    "store_features",
)


@dataclass(frozen=True)
class LogQuery:
    since: str = "1h"
    until: str = "now"
    request_id: str | None = None
    applicant: int | None = None
    model_version: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class LogResult:
    table: pa.Table
    files: int
    start: datetime
    end: datetime

    def summary(self) -> str:
        rows = self.table.num_rows
        span = f"{self.start:%Y-%m-%dT%H:%M:%SZ} .. {self.end:%Y-%m-%dT%H:%M:%SZ}"
        text = f"{rows} inference-log row{'s' if rows != 1 else ''} from {self.files} data files, {span}"
        if rows:
            stats = _stats(self.table)
            text += (
                f"; model versions {stats['versions']}; probability mean {stats['p_mean']:.4f}; "
                f"latency p50 {stats['lat_p50']:.1f} ms, max {stats['lat_max']:.1f} ms"
            )
        return text


def _stats(table: pa.Table) -> dict:
    con = duckdb.connect()
    con.register("logs", table)
    versions = con.execute(
        "SELECT model_version, count(*) FROM logs GROUP BY 1 ORDER BY try_cast(model_version AS BIGINT), 1"
    ).fetchall()
    p_mean, lat_p50, lat_max = con.execute(
        "SELECT avg(probability), median(latency_ms), max(latency_ms) FROM logs"
    ).fetchone()
    return {
        "versions": ", ".join(f"{v} ({n})" for v, n in versions),
        "p_mean": p_mean,
        "lat_p50": lat_p50,
        "lat_max": lat_max,
    }


def time_range(query: LogQuery, now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or datetime.now(UTC)
    bounds = []
    for option, value in (("--since", query.since), ("--until", query.until)):
        try:
            bounds.append(parse_time(value, now))
        except ValueError:
            raise CliError(
                f"{option} {value!r}: expected now, a duration (90s, 15m, 2h, 7d) or an ISO-8601 time"
            ) from None
    start, end = bounds
    if start >= end:
        raise CliError(f"--since {query.since!r} is not before --until {query.until!r}")
    return start, end


def query_logs(settings: Settings, query: LogQuery) -> LogResult:
    start, end = time_range(query)
    try:
        table, files = load_inference_log_table(settings, start, end)
    except Exception as err:  # botocore: endpoint down, no bucket, bad credentials
        raise CliError(
            f"cannot read the inference logs in s3://{settings.logs_bucket}/{settings.logs_prefix} "
            f"({settings.s3_endpoint_url or 'AWS S3'}): {type(err).__name__}: {str(err).splitlines()[0][:200]}"
        ) from None
    con = duckdb.connect()
    con.register("logs", table)
    where, params = [], []
    if query.request_id is not None:
        where.append("request_id = ?")
        params.append(query.request_id)
    if query.applicant is not None:
        where.append("entity_id = ?")
        params.append(query.applicant)
    if query.model_version is not None:
        where.append("model_version = ?")
        params.append(query.model_version)
    features = ", ".join(f'"{name}"' for name in FEATURE_NAMES)
    sql = f"""
        SELECT timestamp, request_id, CAST(entity_id AS BIGINT) AS applicant_id, model_name, model_version,
               probability, decision, latency_ms, {features}, store_features
        FROM logs
        {"WHERE " + " AND ".join(where) if where else ""}
        ORDER BY timestamp, request_id
        {f"LIMIT {int(query.limit)}" if query.limit else ""}
    """
    result = con.sql(sql, params=params).to_arrow_table()
    return LogResult(result, files, start, end)
