"""What the batch-scoring job reads, in chunks: a table of feature rows (Parquet or CSV), or applicants'
ids whose features Feast's offline store gives as of a time (point in time, the training's FeatureService).

Every column is checked as a whole with numpy; an error names the input, the column and the first bad row.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from credit_features import offline_path
from feast import FeatureStore

from mlops_common.features import (
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    FEATURE_DTYPE,
    FEATURE_NAMES,
    FEATURE_SERVICE,
    MAX_ENTITY_ID,
    FeatureGroup,
)
from mlops_common.s3 import arrow_filesystem
from mlops_common.settings import FeastSettings, S3Settings

FORMATS = (".parquet", ".csv")
# The largest float32: a value beyond it would reach the model as infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# CSV blocks read at a time (~40,000 rows of the ten features).
CSV_BLOCK_BYTES = 4 << 20
PARQUET_BUFFER_BYTES = 1 << 20


class InputError(ValueError):
    """The input cannot be scored; the message names the input and, where it applies, the column and row."""


@dataclass(frozen=True)
class Location:
    uri: str  # as given: s3://bucket/key or a local path
    filesystem: pafs.FileSystem
    path: str  # within the filesystem


def locate(uri: str, settings: S3Settings) -> Location:
    if uri.startswith("s3://"):
        path = uri.removeprefix("s3://")
        if "/" not in path.strip("/"):
            raise InputError(f"{uri}: expected s3://<bucket>/<key>")
        return Location(uri, arrow_filesystem(settings), path)
    return Location(uri, pafs.LocalFileSystem(), str(Path(uri).resolve()))


@dataclass(frozen=True)
class Chunk:
    first_row: int  # input row number (from 0) of the chunk's first row
    entity_ids: pa.Array  # int64, null where the input has no applicant id
    features: np.ndarray  # float32 [rows, features] in FEATURE_NAMES order, NaN where missing


@dataclass(frozen=True)
class Input:
    chunks: Iterator[Chunk]
    rows: int | None  # None when unknown before reading (CSV)


def feature_rows(location: Location, chunk_rows: int) -> Input:
    """A table with every feature column (empty = missing) and optionally SK_ID_CURR; other columns are ignored."""
    batches, rows = _open_table(location, chunk_rows, required=FEATURE_NAMES)
    return Input(_feature_chunks(batches, location.uri), rows)


def applicant_ids(location: Location, chunk_rows: int) -> Iterator[np.ndarray]:
    """The SK_ID_CURR column of a table, chunk by chunk; every id must be present and in range."""
    batches, _ = _open_table(location, chunk_rows, required=(ENTITY_KEY,))
    first_row = 0
    for batch in batches:
        ids = _entity_ids(batch, location.uri, first_row)
        if ids.null_count:
            row = first_row + int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{location.uri}: column {ENTITY_KEY}, row {row}: empty (every row needs an applicant id)")
        yield ids.to_numpy()
        first_row += len(batch)


def applicants_in_offline_store(settings: FeastSettings, as_of: datetime) -> np.ndarray:
    """Every applicant with an application row in the offline store at or before ``as_of``."""
    uri = offline_path(settings, FeatureGroup.APPLICATION)
    dataset = pads.dataset(uri.removeprefix("s3://"), filesystem=arrow_filesystem(settings), format="parquet")
    moment = pa.scalar(pd.Timestamp(as_of), type=dataset.schema.field(EVENT_TIMESTAMP).type)
    table = dataset.to_table(columns=[ENTITY_KEY], filter=pc.field(EVENT_TIMESTAMP) <= moment)
    return np.unique(table.column(ENTITY_KEY).to_numpy())


def features_as_of(store: FeatureStore, ids: np.ndarray, as_of: datetime) -> np.ndarray:
    """The FeatureService's values for each id as of ``as_of`` (Feast's point-in-time join), in ``ids`` order;
    NaN where the store had no value yet (or only one older than the feature view's TTL)."""
    entity_rows = pd.DataFrame({ENTITY_KEY: ids, EVENT_TIMESTAMP: pd.Timestamp(as_of)})
    service = store.get_feature_service(FEATURE_SERVICE)
    joined = store.get_historical_features(entity_df=entity_rows, features=service).to_df()
    joined = joined.drop_duplicates([ENTITY_KEY, EVENT_TIMESTAMP])
    rows = entity_rows.merge(joined, on=[ENTITY_KEY, EVENT_TIMESTAMP], how="left", sort=False)
    return rows[list(FEATURE_NAMES)].to_numpy(FEATURE_DTYPE, na_value=np.nan)


def _open_table(location: Location, chunk_rows: int, *, required: tuple[str, ...]):
    uri = location.uri
    suffix = next((s for s in FORMATS if uri.lower().endswith(s)), None)
    if suffix is None:
        raise InputError(f"{uri}: expected a .parquet or .csv file")
    try:
        info = location.filesystem.get_file_info(location.path)
    except OSError as err:  # a bucket that does not exist, refused credentials
        raise InputError(f"{uri}: cannot be read: {err}") from err
    if info.type != pafs.FileType.File:
        raise InputError(f"{uri}: no such file")
    columns = (*required, ENTITY_KEY) if ENTITY_KEY not in required else required
    try:
        if suffix == ".parquet":
            # Buffered column reads: a file written as one big row group streams page by page.
            parquet = pq.ParquetFile(
                location.filesystem.open_input_file(location.path), buffer_size=PARQUET_BUFFER_BYTES
            )
            schema = parquet.schema_arrow
            _check_columns(schema, uri, required)
            present = [c for c in columns if c in schema.names]
            return parquet.iter_batches(batch_size=chunk_rows, columns=present), parquet.metadata.num_rows
        reader = pacsv.open_csv(
            location.filesystem.open_input_stream(location.path),
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(
                column_types={**dict.fromkeys(FEATURE_NAMES, pa.float64()), ENTITY_KEY: pa.int64()},
            ),
        )
    except pa.ArrowInvalid as err:
        raise InputError(f"{uri}: not a readable {suffix[1:]} file: {err}") from err
    _check_columns(reader.schema, uri, required)
    return _csv_batches(reader, uri), None


def _csv_batches(reader: pacsv.CSVStreamingReader, uri: str) -> Iterator[pa.RecordBatch]:
    names = reader.schema.names
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as err:  # "In CSV column #3: Row #1207: CSV conversion error to double: ..."
            column = re.search(r"column #(\d+)", str(err))
            name = names[int(column[1])] if column else "?"
            raise InputError(f"{uri}: column {name}: {err}") from err
        yield batch


def _check_columns(schema: pa.Schema, uri: str, required: tuple[str, ...]) -> None:
    missing = [name for name in required if name not in schema.names]
    if missing:
        raise InputError(
            f"{uri}: missing column(s) {', '.join(missing)} (has {', '.join(schema.names) or 'none'}); "
            "every feature column is required, an empty value is a missing one"
        )
    # Only the columns this input is read for: an ids table may carry anything else.
    for name in dict.fromkeys((*required, ENTITY_KEY)):
        if name not in schema.names:
            continue
        kind = schema.field(name).type
        integer = pa.types.is_integer(kind) or pa.types.is_null(kind)
        number = integer or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
        if not (integer if name == ENTITY_KEY else number):
            expected = "integers" if name == ENTITY_KEY else "numbers"
            raise InputError(f"{uri}: column {name} holds {kind}, not {expected}")


def _feature_chunks(batches: Iterator[pa.RecordBatch], uri: str) -> Iterator[Chunk]:
    first_row = 0
    for batch in batches:
        features = np.empty((len(batch), len(FEATURE_NAMES)), dtype=FEATURE_DTYPE)
        for j, name in enumerate(FEATURE_NAMES):
            values = batch.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
            _check_finite(values, uri, name, first_row)
            features[:, j] = values
        if ENTITY_KEY in batch.schema.names:
            ids = _entity_ids(batch, uri, first_row)
        else:
            ids = pa.nulls(len(batch), pa.int64())
        yield Chunk(first_row, ids, features)
        first_row += len(batch)


def _check_finite(values: np.ndarray, uri: str, name: str, first_row: int) -> None:
    """NaN is a missing value (as an empty cell); infinity, or a number float32 cannot hold, is an error."""
    bad = np.abs(values) > FLOAT32_MAX  # NaN compares False
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{uri}: column {name}, row {first_row + i}: {values[i]!r} is not a finite float32 "
            f"({int(bad.sum())} such value(s) in rows {first_row}-{first_row + len(values) - 1})"
        )


def _entity_ids(batch: pa.RecordBatch, uri: str, first_row: int) -> pa.Array:
    ids = batch.column(ENTITY_KEY).cast(pa.int64())
    values = ids.fill_null(0).to_numpy()
    bad = (values < 0) | (values > MAX_ENTITY_ID)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{uri}: column {ENTITY_KEY}, row {first_row + i}: {values[i]} is outside 0 … {MAX_ENTITY_ID}")
    return ids
