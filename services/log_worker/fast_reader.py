"""The log worker's fast readers of inference-log messages (``mlops_common.inference_log_wire``).

``InferenceLogRecord`` (pydantic) defines a valid record; validating a message of 500 records with it
took most of the log worker's CPU (a model per record, then a row per model). The fast readers take the
usual message (every record valid, as the BFF writes them) without a model per record:
``blocks_to_table`` a message of blocks, checking whole columns at once, ``lines_to_table`` one of
JSON lines, read with msgspec. They are stricter than the model, never looser: where they refuse a
message (NaN constants, numbers as strings, a probability out of range, anything odd), the caller
validates its records with the model, which gives each bad record its reason.
``tests/log_worker/test_fast_reader.py`` holds the two to that.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import KEY_SEGMENT_PATTERN, TABLE_SCHEMA
from mlops_common.inference_log_wire import TIME_DTYPE, TIME_RANGE_US, VALUE_DTYPE, WireBlock, WireRecord

_WIRE_DECODER = msgspec.json.Decoder(WireRecord)
# fullmatch, as pydantic's pattern (Python's ``$`` would also match before a final newline).
_KEY_SEGMENT_RE = re.compile(KEY_SEGMENT_PATTERN.removeprefix("^").removesuffix("$"))
_CONTRACT = frozenset(FEATURE_NAMES)


def _store_features_valid(names: list[str]) -> bool:
    return not names or (len(set(names)) == len(names) and _CONTRACT.issuperset(names))


def lines_to_table(lines: Sequence[bytes]) -> pa.Table | None:
    """The rows (``TABLE_SCHEMA``) of record lines that are all valid, read without a model per record;
    None if any line is one this reader does not vouch for (``InferenceLogRecord`` decides then)."""
    if not lines:
        return None
    try:
        records = [_WIRE_DECODER.decode(line) for line in lines]
    except msgspec.DecodeError:  # ValidationError included
        return None
    names = [r.model_name for r in records]
    versions = [r.model_version for r in records]
    if not all(_KEY_SEGMENT_RE.fullmatch(key) for key in {*names, *versions}):
        return None
    if not all(_store_features_valid(r.store_features) for r in records):
        return None
    latency_ms = np.fromiter((r.latency_ms for r in records), np.float64, len(records))
    if not np.isfinite(latency_ms).all():  # 1e999 reads as inf
        return None
    timestamps = pa.array([r.timestamp for r in records], pa.timestamp("us", tz="UTC"))
    features = zip(*(msgspec.structs.astuple(r.features) for r in records), strict=True)
    columns: dict[str, Any] = {
        "schema_version": [r.schema_version for r in records],
        "request_id": [r.request_id for r in records],
        "timestamp": timestamps,
        "entity_id": [r.entity_id for r in records],
        "model_name": names,
        "model_version": versions,
        **dict(zip(FEATURE_NAMES, features, strict=True)),
        "store_features": [r.store_features for r in records],
        "probability": [r.probability for r in records],
        "decision": [r.decision for r in records],
        "latency_ms": latency_ms,
        "role": [r.role.value for r in records],
        # The UTC day (the timestamps are UTC).
        "date": timestamps.cast(pa.date32()).cast(pa.string()),
    }
    try:
        return pa.Table.from_pydict(columns, schema=TABLE_SCHEMA)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return None


def _lengths_within(values: pa.StringArray, low: int, high: int) -> bool:
    bounds = pc.min_max(pc.utf8_length(values))
    return low <= bounds["min"].as_py() and bounds["max"].as_py() <= high


def _joined(blocks: Sequence[WireBlock], name: str) -> list[Any]:
    """A per-row list column of the blocks, one after the other."""
    return list(itertools.chain.from_iterable(getattr(block, name) for block in blocks))


def _column(blocks: Sequence[WireBlock], name: str, dtype: np.dtype) -> np.ndarray:
    return np.frombuffer(b"".join(getattr(block, name) for block in blocks), dtype)


def blocks_to_table(blocks: Sequence[WireBlock]) -> pa.Table | None:
    """The rows (``TABLE_SCHEMA``) of blocks whose records are all valid, checked column by column;
    None if any value is one this reader does not vouch for. The blocks' columns must describe the same
    rows (``WireBlock.shape_error`` is None)."""
    if not blocks or not (total := sum(block.rows for block in blocks)):
        return None
    request_ids = pa.array(_joined(blocks, "request_ids"), pa.string())
    decisions = pa.array(_joined(blocks, "decisions"), pa.string())
    versions = _joined(blocks, "model_versions")
    store_features = _joined(blocks, "store_features")
    times = _column(blocks, "timestamps", TIME_DTYPE)
    latencies = _column(blocks, "latencies_ms", VALUE_DTYPE)
    probabilities = _column(blocks, "probabilities", VALUE_DTYPE)
    if not (
        _lengths_within(request_ids, 1, 128)
        and _lengths_within(decisions, 1, 64)
        and all(_KEY_SEGMENT_RE.fullmatch(key) for key in {*versions, *(block.model_name for block in blocks)})
        and all(_store_features_valid(list(names)) for names in {tuple(names) for names in store_features})
        and ((probabilities >= 0.0) & (probabilities <= 1.0)).all()  # False for NaN
        and (np.isfinite(latencies) & (latencies >= 0.0)).all()
        and ((times >= TIME_RANGE_US[0]) & (times <= TIME_RANGE_US[1])).all()
    ):
        return None
    # Each block's constants, repeated over its rows.
    of_block = np.repeat(np.arange(len(blocks)), [block.rows for block in blocks])
    timestamps = pa.array(times, pa.timestamp("us", tz="UTC"))
    by_feature = np.ascontiguousarray(_column(blocks, "features", VALUE_DTYPE).reshape(total, -1).T)
    columns: dict[str, Any] = {
        "schema_version": np.array([block.schema_version for block in blocks], np.int16)[of_block],
        "request_id": request_ids,
        "timestamp": timestamps,
        "entity_id": _joined(blocks, "entity_ids"),
        "model_name": pa.array([block.model_name for block in blocks], pa.string()).take(of_block),
        "model_version": versions,
        # NaN is a feature without a value (null), as in the JSON lines.
        **{
            name: pa.array(column, mask=np.isnan(column))
            for name, column in zip(FEATURE_NAMES, by_feature, strict=True)
        },
        "store_features": store_features,
        "probability": probabilities,
        "decision": decisions,
        "latency_ms": latencies,
        # A Role is a str: Arrow takes it as its value.
        "role": _joined(blocks, "roles"),
        "date": timestamps.cast(pa.date32()).cast(pa.string()),
    }
    try:
        return pa.Table.from_pydict(columns, schema=TABLE_SCHEMA)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return None
