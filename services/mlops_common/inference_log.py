"""The inference log: one record per prediction, shared by the BFF (producer), the log worker (RabbitMQ
to Parquet in S3) and every job that reads the logs back (drift analysis, retraining, audits).

A record is one JSON object (this model); an AMQP message carries records either as JSON lines
(``MESSAGE_CONTENT_TYPE``: the BFF's spool, the dead-letter queue, hand-written messages) or as blocks
of columns (``mlops_common.inference_log_wire``: what the BFF publishes). A feature without a value is
null (NaN in a block); ±inf travel as the JSON constant ``Infinity`` (as Python's ``json`` writes it),
so the logged vector is the one sent to Triton. In S3 the records are rows of a Delta Lake table
(``mlops_common.delta``) at

    s3://<LOGS_BUCKET>/<LOGS_PREFIX>/    partitioned by model_name, model_version, date (UTC, YYYY-MM-DD)

with one float64 column per feature, named as in the feature contract. Delivery from the BFF is at
least once; the table holds each record once, because writers only ever MERGE on ``request_id`` and
``timestamp`` (``write_inference_log_rows``): a record delivered twice, by any path, is one row (its
copies carry the same time). The MERGE reads only the data files of the batch's time range, so its
cost does not grow with the day's rows. Two requests a client sent with the same ``X-Request-ID`` were
each scored, and are a row each.

Changing the record, the Parquet schema or the feature contract means bumping ``SCHEMA_VERSION``:
workers reject records of a version they do not know (to the dead-letter queue). Version 2 added
``role`` (``mlops_common.rollout.Role``: champion, canary or shadow); version 1 records are the
champion's, and a table made before it gets the column on the worker's start (old rows: null).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import WriterProperties
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops_common.delta import delta_storage_options, merge_new_rows, open_table
from mlops_common.features import FEATURE_NAMES
from mlops_common.rollout import Role
from mlops_common.settings import S3Settings

if TYPE_CHECKING:
    # Only readers need pandas (pyarrow imports it on demand): the worker starts seconds faster.
    import pandas as pd
    from deltalake import DeltaTable

SCHEMA_VERSION = 2
MESSAGE_CONTENT_TYPE = "application/x-ndjson"

# Model names and versions become S3 key segments and Hive partition values.
KEY_SEGMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class InferenceLogStoreSettings(S3Settings):
    """Where the log worker writes the inference logs and where readers find them."""

    logs_bucket: str = "mlops-inference-logs"
    # The table's folder in the bucket (its _delta_log/ is directly below it).
    logs_prefix: str = Field("inference-logs", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?$")

    @property
    def inference_log_table_uri(self) -> str:
        return f"s3://{self.logs_bucket}/{self.logs_prefix.strip('/')}"


class InferenceLogRecord(BaseModel):
    """One logged prediction. Construct it with keyword arguments; it validates itself."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    request_id: str = Field(min_length=1, max_length=128)
    timestamp: AwareDatetime
    entity_id: int | None = None
    # The vector sent to Triton, in feature-contract order; None where a feature had no value.
    features: dict[str, float | None]
    # Which of those features came from the online store (the rest came with the request).
    store_features: list[str] = Field(default_factory=list)
    model_name: str = Field(pattern=KEY_SEGMENT_PATTERN)
    model_version: str = Field(pattern=KEY_SEGMENT_PATTERN)
    probability: FiniteFloat = Field(ge=0.0, le=1.0)
    decision: str = Field(min_length=1, max_length=64)
    latency_ms: FiniteFloat = Field(ge=0.0)
    # Who the row was for: the client (champion, canary) or only the rollout's analysis (shadow).
    role: Role = Role.CHAMPION

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


# -- the table -------------------------------------------------------------------------------------
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
    # Null in rows written before schema version 2: the champion's.
    pa.field("role", pa.string()),
    # The partition of the row: the UTC day of its timestamp.
    pa.field("date", pa.string(), nullable=False),
)
# float64 holds every float32 the model saw exactly, and every float a client sent.
TABLE_SCHEMA = pa.schema(
    [*_RECORD_COLUMNS, *(pa.field(name, pa.float64()) for name in FEATURE_NAMES), *_OUTCOME_COLUMNS]
)
assert len(set(TABLE_SCHEMA.names)) == len(TABLE_SCHEMA.names), "a feature name collides with a record column"
PARTITION_COLUMNS = ("model_name", "model_version", "date")
# A column's dictionary is given up once it passes 8 KiB (deltalake's default: 1 MiB). A column of few values
# (names, versions, decisions, the day) keeps it; one of distinct values (request ids, times, probabilities, most
# features) is encoded plain after its first few hundred values, where a dictionary only costs the merge CPU.
# Both sides, CPU per write and bytes per row: ``benchmarks/inference_logging/table.py``.
TABLE_WRITER_PROPERTIES = WriterProperties(dictionary_page_size_limit=8 * 1024)


def records_to_table(records: Sequence[InferenceLogRecord]) -> pa.Table:
    """Rows in ``TABLE_SCHEMA``; raises (``pyarrow.ArrowException``) for a record Arrow cannot hold."""
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
        "role": [str(r.role) for r in records],
        "date": [f"{r.timestamp:%Y-%m-%d}" for r in records],
    }
    return pa.Table.from_pydict(columns, schema=TABLE_SCHEMA)


def open_inference_log_table(settings: InferenceLogStoreSettings, *, timeout_s: float = 30.0) -> DeltaTable:
    """The table, created if there is none; raise ``TableSchemaError`` if it exists with other columns."""
    return open_table(
        settings.inference_log_table_uri,
        TABLE_SCHEMA,
        PARTITION_COLUMNS,
        delta_storage_options(settings, timeout_s=timeout_s),
        added_later=("role",),
    )


def write_inference_log_rows(
    settings: InferenceLogStoreSettings, rows: pa.Table, *, timeout_s: float = 30.0, table: DeltaTable | None = None
) -> int:
    """Add the records the table does not hold yet (in one commit); return how many. A writer that keeps
    writing passes the ``table`` it opened (``open_inference_log_table``)."""
    return merge_new_rows(
        settings.inference_log_table_uri,
        rows,
        key="request_id",
        partition_by=PARTITION_COLUMNS,
        options=delta_storage_options(settings, timeout_s=timeout_s),
        time_column="timestamp",
        table=table,
        writer_properties=TABLE_WRITER_PROPERTIES,
    )


# -- reading ----------------------------------------------------------------------------------------
def _aware_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _days(start: datetime, end: datetime) -> list[str]:
    days, day = [], start.date()
    while datetime.combine(day, datetime.min.time(), UTC) < end:
        days.append(f"{day:%Y-%m-%d}")
        day += timedelta(days=1)
    return days


def load_inference_log_table(
    settings: InferenceLogStoreSettings, start: datetime, end: datetime, *, model_name: str | None = None
) -> tuple[pa.Table, int]:
    """Logged inferences with ``start <= timestamp < end`` (timezone-aware datetimes) as one Arrow
    table (``TABLE_SCHEMA``, sorted by timestamp), and how many data files held them (only the date
    partitions of the range are read). An empty table where nothing was logged yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    start, end = _aware_utc(start, "start"), _aware_utc(end, "end")
    try:
        table = DeltaTable(settings.inference_log_table_uri, storage_options=delta_storage_options(settings))
    except TableNotFoundError:
        return TABLE_SCHEMA.empty_table(), 0
    partitions: list[tuple[str, str, Any]] = [("date", "in", _days(start, end))]
    if model_name is not None:
        partitions.append(("model_name", "=", model_name))
    dataset = table.to_pyarrow_dataset(partitions=partitions)
    in_range = (pads.field("timestamp") >= pa.scalar(start, pa.timestamp("us", tz="UTC"))) & (
        pads.field("timestamp") < pa.scalar(end, pa.timestamp("us", tz="UTC"))
    )
    files = len(dataset.files) if isinstance(dataset, pads.FileSystemDataset) else 0
    rows = dataset.to_table(filter=in_range).select(TABLE_SCHEMA.names).cast(TABLE_SCHEMA)
    return rows.sort_by([("timestamp", "ascending"), ("request_id", "ascending")]), files


def read_inference_logs(
    settings: InferenceLogStoreSettings, start: datetime, end: datetime, *, model_name: str | None = None
) -> pd.DataFrame:
    """``load_inference_log_table`` as a DataFrame. ``entity_id`` stays an integer (pandas' nullable
    ``Int64``), not a float, when some rows have none."""
    import pandas as pd

    table, _ = load_inference_log_table(settings, start, end, model_name=model_name)
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
