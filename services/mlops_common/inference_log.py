"""The inference log: one record per prediction, shared by the BFF (producer), the log worker (RabbitMQ
to Parquet in S3) and every job that reads the logs back (drift analysis, retraining, audits).

On the wire a record is one JSON object; an AMQP message carries one or more records as JSON lines
(``MESSAGE_CONTENT_TYPE``). NaN and ±inf feature values travel as the JSON constants ``NaN`` and
``Infinity`` (as Python's ``json`` writes them) so the logged vector is exactly the one sent to
Triton. In S3 each record is one row of a Parquet object at

    <prefix>/model=<name>/version=<v>/date=YYYY-MM-DD/hour=HH/<batch id>.parquet

with one float64 column per feature, named as in the feature contract. The batch id is a hash of
the batch's request ids, so a batch written again after a failed acknowledgement overwrites its
first copy. Delivery is at least once: ``read_inference_logs`` de-duplicates by request id.

Changing the record, the Parquet schema or the feature contract means bumping ``SCHEMA_VERSION``:
workers reject records of a version they do not know (to the dead-letter queue).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops_common.features import FEATURE_NAMES
from mlops_common.s3 import s3_client
from mlops_common.settings import S3Settings

if TYPE_CHECKING:
    # Only readers need pandas (pyarrow imports it on demand): the worker starts seconds faster.
    import pandas as pd

SCHEMA_VERSION = 1
MESSAGE_CONTENT_TYPE = "application/x-ndjson"

# Model names and versions become S3 key segments and Hive partition values.
_KEY_SEGMENT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class InferenceLogStoreSettings(S3Settings):
    """Where the log worker writes the inference logs and where readers find them."""

    logs_bucket: str = "mlops-inference-logs"
    logs_prefix: str = "inference-logs"


class InferenceLogRecord(BaseModel):
    """One logged prediction. Construct it with keyword arguments; it validates itself."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str = Field(min_length=1, max_length=128)
    timestamp: AwareDatetime
    entity_id: int | None = None
    # The vector sent to Triton, in feature-contract order; None where a feature had no value.
    features: dict[str, float | None]
    # Which of those features came from the online store (the rest came with the request).
    store_features: list[str] = Field(default_factory=list)
    model_name: str = Field(pattern=_KEY_SEGMENT)
    model_version: str = Field(pattern=_KEY_SEGMENT)
    probability: FiniteFloat = Field(ge=0.0, le=1.0)
    decision: str = Field(min_length=1, max_length=64)
    latency_ms: FiniteFloat = Field(ge=0.0)

    @field_validator("timestamp")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("features")
    @classmethod
    def _contract_features(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        if set(value) != set(FEATURE_NAMES) or len(value) != len(FEATURE_NAMES):
            missing = sorted(set(FEATURE_NAMES) - set(value))
            unknown = sorted(set(value) - set(FEATURE_NAMES))
            raise ValueError(f"features must be exactly the contract's: missing {missing}, unknown {unknown}")
        return {name: value[name] for name in FEATURE_NAMES}

    @model_validator(mode="after")
    def _store_features_known(self) -> InferenceLogRecord:
        unknown = sorted(set(self.store_features) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"store_features not in the feature contract: {unknown}")
        if len(set(self.store_features)) != len(self.store_features):
            raise ValueError("store_features has duplicates")
        return self

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> InferenceLogRecord:
        """Raises ``pydantic.ValidationError`` (a ``ValueError``) for anything but a valid record."""
        return cls.model_validate_json(data)


def encode_message(records: Sequence[bytes]) -> bytes:
    """One AMQP message body from serialized records (JSON lines)."""
    return b"\n".join(records)


def split_message(body: bytes) -> list[bytes]:
    """The record lines of a message body; blank lines are ignored."""
    return [line for line in body.split(b"\n") if line.strip()]


# -- Parquet ----------------------------------------------------------------------------------------
_RECORD_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("schema_version", pa.int16(), nullable=False),
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("entity_id", pa.int64()),
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
)
_OUTCOME_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("store_features", pa.list_(pa.string()), nullable=False),
    pa.field("probability", pa.float64(), nullable=False),
    pa.field("decision", pa.string(), nullable=False),
    pa.field("latency_ms", pa.float64(), nullable=False),
)
# float64 holds every float32 the model saw exactly, and every float a client sent.
PARQUET_SCHEMA = pa.schema(
    [*_RECORD_COLUMNS, *(pa.field(name, pa.float64()) for name in FEATURE_NAMES), *_OUTCOME_COLUMNS],
    metadata={"inference_log_schema_version": str(SCHEMA_VERSION)},
)
assert len(set(PARQUET_SCHEMA.names)) == len(PARQUET_SCHEMA.names), "a feature name collides with a record column"


def records_to_table(records: Sequence[InferenceLogRecord]) -> pa.Table:
    columns: dict[str, list[Any]] = {
        "schema_version": [r.schema_version for r in records],
        "request_id": [r.request_id for r in records],
        "timestamp": [r.timestamp for r in records],
        "entity_id": [r.entity_id for r in records],
        "model_name": [r.model_name for r in records],
        "model_version": [r.model_version for r in records],
        **{name: [r.features[name] for r in records] for name in FEATURE_NAMES},
        "store_features": [r.store_features for r in records],
        "probability": [r.probability for r in records],
        "decision": [r.decision for r in records],
        "latency_ms": [r.latency_ms for r in records],
    }
    return pa.Table.from_pydict(columns, schema=PARQUET_SCHEMA)


def table_to_parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


# -- object keys ------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Partition:
    model_name: str
    model_version: str
    hour: datetime  # UTC, truncated to the hour

    def prefix(self, root: str) -> str:
        return (
            f"{root.strip('/')}/model={self.model_name}/version={self.model_version}"
            f"/date={self.hour:%Y-%m-%d}/hour={self.hour:%H}"
        )


def partition_of(record: InferenceLogRecord) -> Partition:
    return Partition(
        record.model_name, record.model_version, record.timestamp.replace(minute=0, second=0, microsecond=0)
    )


def partition_records(records: Iterable[InferenceLogRecord]) -> dict[Partition, list[InferenceLogRecord]]:
    groups: dict[Partition, list[InferenceLogRecord]] = defaultdict(list)
    for record in records:
        groups[partition_of(record)].append(record)
    return dict(groups)


def object_key(root: str, partition: Partition, request_ids: Iterable[str]) -> str:
    """Deterministic: the same partition and set of request ids give the same key, in any order."""
    digest = hashlib.sha256("\n".join(sorted(request_ids)).encode()).hexdigest()[:32]
    return f"{partition.prefix(root)}/{digest}.parquet"


_HOUR_KEY = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/[^/]+\.parquet$")


def _hour_of_key(key: str) -> datetime | None:
    match = _HOUR_KEY.search(key)
    if match is None:
        return None
    return datetime.fromisoformat(f"{match[1]}T{match[2]}:00:00+00:00")


# -- reading ----------------------------------------------------------------------------------------
def _aware_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _list_prefixes(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    return [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]


def _list_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def list_log_objects(
    client: Any, bucket: str, prefix: str, start: datetime, end: datetime, *, model_name: str | None = None
) -> list[str]:
    """Keys of the Parquet objects whose hour partition overlaps [start, end), sorted."""
    start, end = _aware_utc(start, "start"), _aware_utc(end, "end")
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    days: list[date] = []
    day = first_hour.date()
    while datetime.combine(day, datetime.min.time(), UTC) < end:
        days.append(day)
        day += timedelta(days=1)
    root = f"{prefix.strip('/')}/"
    models = [f"{root}model={model_name}/"] if model_name else _list_prefixes(client, bucket, root)
    keys = []
    for model_prefix in models:
        for version_prefix in _list_prefixes(client, bucket, model_prefix):
            for day in days:
                for key in _list_keys(client, bucket, f"{version_prefix}date={day:%Y-%m-%d}/"):
                    hour = _hour_of_key(key)
                    if hour is not None and first_hour <= hour < end:
                        keys.append(key)
    return sorted(keys)


def load_inference_log_table(
    settings: InferenceLogStoreSettings,
    start: datetime,
    end: datetime,
    *,
    model_name: str | None = None,
    max_workers: int = 8,
) -> tuple[pa.Table, int]:
    """Logged inferences with ``start <= timestamp < end`` (timezone-aware datetimes) as one Arrow
    table (``PARQUET_SCHEMA``, sorted by timestamp, not yet de-duplicated), and how many objects held them."""
    start, end = _aware_utc(start, "start"), _aware_utc(end, "end")
    client = s3_client(settings)
    keys = list_log_objects(client, settings.logs_bucket, settings.logs_prefix, start, end, model_name=model_name)

    def load(key: str) -> pa.Table:
        body = client.get_object(Bucket=settings.logs_bucket, Key=key)["Body"].read()
        return pq.read_table(io.BytesIO(body))

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        tables = list(pool.map(load, keys))
    table = pa.concat_tables(tables, promote_options="default") if tables else PARQUET_SCHEMA.empty_table()
    in_range = pc.and_(pc.greater_equal(table["timestamp"], start), pc.less(table["timestamp"], end))
    return table.filter(in_range).sort_by([("timestamp", "ascending"), ("request_id", "ascending")]), len(keys)


def read_inference_logs(
    settings: InferenceLogStoreSettings,
    start: datetime,
    end: datetime,
    *,
    model_name: str | None = None,
    max_workers: int = 8,
) -> pd.DataFrame:
    """Logged inferences with ``start <= timestamp < end`` (timezone-aware datetimes), one row per
    request id (the earliest copy wins), sorted by timestamp; columns as ``PARQUET_SCHEMA``.
    ``entity_id`` stays an integer (pandas' nullable ``Int64``), not a float, when some rows have none."""
    import pandas as pd

    table, _ = load_inference_log_table(settings, start, end, model_name=model_name, max_workers=max_workers)
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    return frame.drop_duplicates("request_id", keep="first").reset_index(drop=True)
