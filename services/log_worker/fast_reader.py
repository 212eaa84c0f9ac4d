"""The log worker's fast reader of inference-log messages.

``InferenceLogRecord`` (pydantic) defines a valid record; validating a message of 500 records with it
took most of the log worker's CPU (a model per record, then a row per model). ``lines_to_table`` reads
the usual message (every record valid, as the BFF writes them) with msgspec and builds the columns
without a model per record. It is stricter than the model, never looser: where it refuses a line (NaN
constants, numbers as strings, anything odd), the caller validates the message with the model, which
gives each bad record its reason. ``tests/log_worker/test_fast_reader.py`` holds the two to that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import KEY_SEGMENT_PATTERN, TABLE_SCHEMA
from mlops_common.inference_log_wire import WireRecord

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
