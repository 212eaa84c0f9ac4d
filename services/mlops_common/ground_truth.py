"""Ground truth: the observed outcome of an applicant (did the loan default?), the table that #9's
quality monitor joins to the inference logs on ``entity_id = applicant_id``.

A Delta table beside the inference logs (``s3://<LOGS_BUCKET>/<GROUND_TRUTH_PREFIX>``), one row per
applicant. Labels arrive from ``POST /labels`` on the BFF or ``mlops labels import FILE``; both call
``write_labels``, an upsert on ``applicant_id`` where a label replaces the stored one only if it was
observed at the same time or later (within one batch too), so replays and out-of-order imports settle
on the newest outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlops_common.delta import delta_storage_options, open_table, upsert_rows
from mlops_common.features import MAX_ENTITY_ID
from mlops_common.inference_log import InferenceLogStoreSettings

LABEL_SCHEMA = pa.schema(
    [
        pa.field("applicant_id", pa.int64(), nullable=False),
        # 1: the applicant defaulted (Home Credit's TARGET), 0: repaid.
        pa.field("outcome", pa.int8(), nullable=False),
        pa.field("observed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # When the platform received the label (audit; not part of the merge decision).
        pa.field("recorded_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
# A batch of labels (one API call, one import file's chunk) is one commit.
MAX_LABELS_PER_WRITE = 10_000


class GroundTruthStoreSettings(InferenceLogStoreSettings):
    """The ground-truth table lives in the inference logs' bucket, under its own prefix."""

    ground_truth_prefix: str = Field("ground-truth", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?$")

    @property
    def ground_truth_table_uri(self) -> str:
        return f"s3://{self.logs_bucket}/{self.ground_truth_prefix.strip('/')}"


class Label(BaseModel):
    """One observed outcome."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    applicant_id: int = Field(ge=0, le=MAX_ENTITY_ID, description="SK_ID_CURR, the entity id the prediction was for")
    outcome: int = Field(ge=0, le=1, description="1 if the applicant defaulted, 0 if the loan was repaid")
    observed_at: AwareDatetime = Field(description="When the outcome was observed (ISO-8601 with an offset)")

    @field_validator("observed_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


def labels_to_table(labels: Sequence[Label], *, recorded_at: datetime | None = None) -> pa.Table:
    recorded_at = recorded_at or datetime.now(UTC)
    return pa.table(
        {
            "applicant_id": [label.applicant_id for label in labels],
            "outcome": [label.outcome for label in labels],
            "observed_at": [label.observed_at for label in labels],
            "recorded_at": [recorded_at] * len(labels),
        },
        schema=LABEL_SCHEMA,
    )


def write_labels(
    settings: GroundTruthStoreSettings, labels: Sequence[Label], *, timeout_s: float = 30.0
) -> dict[str, int]:
    """Upsert the labels in one commit; counts ``inserted``, ``updated``, ``unchanged``. Each S3 request
    is bounded by ``timeout_s``."""
    if len(labels) > MAX_LABELS_PER_WRITE:
        raise ValueError(f"{len(labels)} labels in one write; at most {MAX_LABELS_PER_WRITE}")
    if not labels:
        return {"inserted": 0, "updated": 0, "unchanged": 0}
    options = delta_storage_options(settings, timeout_s=timeout_s)
    open_table(settings.ground_truth_table_uri, LABEL_SCHEMA, (), options)
    return upsert_rows(
        settings.ground_truth_table_uri,
        labels_to_table(labels),
        key="applicant_id",
        newer="observed_at",
        options=options,
    )


def load_labels(settings: GroundTruthStoreSettings) -> pa.Table:
    """Every label (``LABEL_SCHEMA``); empty before the first one is written."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(settings.ground_truth_table_uri, storage_options=delta_storage_options(settings))
    except TableNotFoundError:
        return LABEL_SCHEMA.empty_table()
    return table.to_pyarrow_table().select(LABEL_SCHEMA.names).cast(LABEL_SCHEMA)


class LabelFileError(ValueError):
    """A label file that cannot be imported; the message names the row and the field."""


def read_label_file(path: Path) -> list[Label]:
    """Labels from a CSV or Parquet file with the columns applicant_id, outcome, observed_at. Every
    row is validated before anything is written: one bad row rejects the file."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # Everything as text: pydantic parses and names the field of a bad value.
            convert = pacsv.ConvertOptions(column_types=dict.fromkeys(Label.model_fields, pa.string()))
            table = pacsv.read_csv(path, convert_options=convert)
        elif suffix == ".parquet":
            table = pq.read_table(path)
        else:
            raise LabelFileError(f"{path}: expected a .csv or .parquet file")
    except (OSError, pa.ArrowException) as err:
        raise LabelFileError(f"{path}: cannot read it: {err}") from None
    missing = [name for name in Label.model_fields if name not in table.column_names]
    if missing:
        raise LabelFileError(f"{path}: missing columns {missing} (has {table.column_names})")
    labels = []
    for number, row in enumerate(
        table.select(list(Label.model_fields)).to_pylist(), start=2 if suffix == ".csv" else 1
    ):
        try:
            labels.append(Label.model_validate(row))
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            where = f"line {number}" if suffix == ".csv" else f"row {number}"
            raise LabelFileError(f"{path}: {where}: {problems}") from None
    return labels
