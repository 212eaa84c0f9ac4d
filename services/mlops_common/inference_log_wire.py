"""Inference logs on the wire, as msgspec structs: what the BFF publishes and the log worker reads, both
without a model per record.

Two message forms travel on the inference-log queue:

- **Blocks** (``BLOCKS_CONTENT_TYPE``, what the BFF publishes): a msgpack array of ``WireBlock`` structs,
  each holding many records column by column: the feature matrix, probabilities, times and latencies as
  raw little-endian arrays, the strings as lists. The request path makes one block of its rows without
  encoding anything (``log_block``); the publisher adds each to the one block its next message gathers
  (``open_block``, ``extend_block``) and encodes the message once.
- **JSON lines** (``mlops_common.inference_log.MESSAGE_CONTENT_TYPE``): one ``InferenceLogRecord`` per
  line, ``WireRecord`` here. What the BFF's spool replays (the spool keeps records, so its accounting is
  per record), what the dead-letter queue holds and replays, and what tests and tools write by hand.

``InferenceLogRecord`` (``mlops_common.inference_log``) still defines what a valid record is; the
structs' constraints are the reader's, stricter than the model, never looser (the fast reader's tests
hold the two to that). Apart from the model, so that only the two services on the log's hot path need
msgspec.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec
import numpy as np

from mlops_common.features import FEATURE_NAMES, N_FEATURES
from mlops_common.inference_log import SCHEMA_VERSION, split_message
from mlops_common.rollout import Role

BLOCKS_CONTENT_TYPE = "application/vnd.mlops.inference-log-blocks+msgpack"
# float64 holds every float32 the model saw and every float a client sent exactly, as the table does.
VALUE_DTYPE = np.dtype("<f8")
TIME_DTYPE = np.dtype("<i8")

WireFeatures = msgspec.defstruct(
    "WireFeatures", [(name, float | None) for name in FEATURE_NAMES], forbid_unknown_fields=True
)


class WireRecord(msgspec.Struct, forbid_unknown_fields=True):
    """One record's JSON line."""

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    features: WireFeatures  # type: ignore[valid-type]
    # The reader checks these once per distinct value (a message has one or two), not per record.
    model_name: str
    model_version: str
    probability: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    decision: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    latency_ms: Annotated[float, msgspec.Meta(ge=0.0)]
    schema_version: Literal[1, 2] = SCHEMA_VERSION
    entity_id: int | None = None
    store_features: list[str] = []
    role: Role = Role.CHAMPION


class WireBlock(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Records, a row each, column by column. Per-row values are checked by the reader on whole columns
    (``log_worker.fast_reader``); ``shape_error`` says whether the columns even describe the same rows."""

    schema_version: Literal[1, 2]
    model_name: str
    request_ids: list[str]
    timestamps: bytes  # TIME_DTYPE [rows]: microseconds since the epoch, UTC
    latencies_ms: bytes  # VALUE_DTYPE [rows]
    # VALUE_DTYPE [rows, N_FEATURES] in C order, in feature-contract order; NaN where a feature had no value.
    features: bytes
    probabilities: bytes  # VALUE_DTYPE [rows]
    model_versions: list[str]
    decisions: list[str]
    roles: list[Role]
    entity_ids: list[int | None]
    store_features: list[list[str]]

    @property
    def rows(self) -> int:
        return len(self.request_ids)

    def shape_error(self) -> str | None:
        """Why the columns do not describe the same rows, or None."""
        lengths = {
            "timestamps": len(self.timestamps) / TIME_DTYPE.itemsize,
            "latencies_ms": len(self.latencies_ms) / VALUE_DTYPE.itemsize,
            "features": len(self.features) / (VALUE_DTYPE.itemsize * N_FEATURES),
            "probabilities": len(self.probabilities) / VALUE_DTYPE.itemsize,
            "model_versions": len(self.model_versions),
            "decisions": len(self.decisions),
            "roles": len(self.roles),
            "entity_ids": len(self.entity_ids),
            "store_features": len(self.store_features),
        }
        wrong = {name: n for name, n in lengths.items() if n != self.rows}
        if not wrong:
            return None
        return f"block of {self.rows} request_ids has columns of other lengths (rows): {wrong}"

    def time_vector(self) -> np.ndarray:
        return np.frombuffer(self.timestamps, TIME_DTYPE)

    def latency_vector(self) -> np.ndarray:
        return np.frombuffer(self.latencies_ms, VALUE_DTYPE)

    def feature_matrix(self) -> np.ndarray:
        return np.frombuffer(self.features, VALUE_DTYPE).reshape(-1, N_FEATURES)

    def probability_vector(self) -> np.ndarray:
        return np.frombuffer(self.probabilities, VALUE_DTYPE)


_MSGPACK_ENCODER = msgspec.msgpack.Encoder()
_BLOCKS_DECODER = msgspec.msgpack.Decoder(list[WireBlock])
_RAW_BLOCKS_DECODER = msgspec.msgpack.Decoder(list[msgspec.Raw])
_BLOCK_DECODER = msgspec.msgpack.Decoder(WireBlock)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# TIME_DTYPE and VALUE_DTYPE, one value.
_TIME, _VALUE = struct.Struct("<q"), struct.Struct("<d")
# The times a record can hold (``datetime``'s range), in microseconds since the epoch.
TIME_RANGE_US = (
    (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND,
    (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND,
)


def log_block(
    *,
    request_ids: list[str],
    timestamp: datetime,
    entity_ids: list[int | None],
    features: np.ndarray,
    store_features: list[list[str]],
    model_name: str,
    model_versions: list[str],
    probabilities: np.ndarray,
    decisions: list[str],
    latency_ms: float,
    roles: list[Role],
) -> WireBlock:
    """A request's records as one block, not encoded yet: the arrays copied as raw bytes, the lists as
    they are, nothing per row. The request path's (the values were validated on the way in; the log
    worker validates what it reads)."""
    rows = len(request_ids)
    return WireBlock(
        schema_version=SCHEMA_VERSION,
        model_name=model_name,
        request_ids=request_ids,
        # One value repeated: bytes repeated, cheaper than an array for the single rows of /predict.
        timestamps=_TIME.pack((timestamp - _EPOCH) // _MICROSECOND) * rows,
        latencies_ms=_VALUE.pack(latency_ms) * rows,
        features=np.ascontiguousarray(features, dtype=VALUE_DTYPE).tobytes(),
        probabilities=np.ascontiguousarray(probabilities, dtype=VALUE_DTYPE).tobytes(),
        model_versions=model_versions,
        decisions=decisions,
        roles=roles,
        entity_ids=entity_ids,
        store_features=store_features,
    )


def open_block(block: WireBlock) -> WireBlock:
    """A copy of ``block`` that later blocks of the same model and schema can be added to (``extend_block``):
    its own lists, growable byte arrays. The rows' lists of store features are shared tuples, one per
    distinct list. (Byte arrays and tuples where the fields say bytes and lists: msgpack encodes them alike,
    and a decoded block has bytes and lists.)"""
    return WireBlock(
        schema_version=block.schema_version,
        model_name=block.model_name,
        request_ids=list(block.request_ids),
        timestamps=bytearray(block.timestamps),
        latencies_ms=bytearray(block.latencies_ms),
        features=bytearray(block.features),
        probabilities=bytearray(block.probabilities),
        model_versions=list(block.model_versions),
        decisions=list(block.decisions),
        roles=list(block.roles),
        entity_ids=list(block.entity_ids),
        store_features=[_shared_names(names) for names in block.store_features],
    )


def extend_block(target: WireBlock, block: WireBlock) -> None:
    """Add ``block``'s rows to ``target`` (from ``open_block``; same model and schema). What ``target`` gains
    are strings, numbers, bytes and shared tuples: no new object the garbage collector tracks, so rows that
    wait in it do not make the collector run more often than without them."""
    target.request_ids += block.request_ids
    target.timestamps += block.timestamps
    target.latencies_ms += block.latencies_ms
    target.features += block.features
    target.probabilities += block.probabilities
    target.model_versions += block.model_versions
    target.decisions += block.decisions
    target.roles += block.roles
    target.entity_ids += block.entity_ids
    target.store_features += map(_shared_names, block.store_features)


# Rows name subsets of the feature contract's names: a few distinct lists, each kept once.
_SHARED_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
_SHARED_NAMES_MAX = 2**N_FEATURES


def _shared_names(names: Sequence[str]) -> Sequence[str]:
    if not names:
        return ()
    key = tuple(names)
    shared = _SHARED_NAMES.get(key)
    if shared is None:
        if len(_SHARED_NAMES) >= _SHARED_NAMES_MAX:
            return key
        shared = _SHARED_NAMES[key] = key
    return shared


def encode_blocks_message(blocks: Sequence[WireBlock]) -> bytes:
    """One message body: the blocks as a msgpack array."""
    return _MSGPACK_ENCODER.encode(list(blocks))


def decode_blocks(body: bytes) -> list[WireBlock]:
    """The blocks of a message; raises ``msgspec.DecodeError`` (its message names the path) if any block
    does not decode."""
    return _BLOCKS_DECODER.decode(body)


def split_blocks(body: bytes) -> tuple[list[WireBlock], list[tuple[bytes, str]]]:
    """The blocks of a message one by one: those that decode, and each one that does not as a message of
    its own with the reason. Raises ``msgspec.DecodeError`` if the body is not a msgpack array at all."""
    blocks, bad = [], []
    for index, raw in enumerate(_RAW_BLOCKS_DECODER.decode(body)):
        try:
            blocks.append(_BLOCK_DECODER.decode(raw))
        except msgspec.DecodeError as err:
            reason = f"invalid inference-log block (#{index} of its message): {_named_fields(str(err))}"
            bad.append((_ONE_ELEMENT_ARRAY + bytes(raw), reason))
    return blocks, bad


_ONE_ELEMENT_ARRAY = b"\x91"
_BLOCK_FIELD_PATH = re.compile(r"`\$\[(\d+)\]")


def _named_fields(error: str) -> str:
    """msgspec's path into an array-like block (``$[4][2]``) with the field's name (``$.request_ids[2]``)."""
    fields = WireBlock.__struct_fields__
    return _BLOCK_FIELD_PATH.sub(
        lambda m: f"`$.{fields[int(m[1])]}" if int(m[1]) < len(fields) else m[0],
        error,
    )


def _record_time(microseconds: int) -> str:
    """A row's time as the record's ISO 8601, or, out of ``datetime``'s range, text the model refuses."""
    if not TIME_RANGE_US[0] <= microseconds <= TIME_RANGE_US[1]:
        return f"{microseconds} µs since the epoch: out of range"
    return (_EPOCH + microseconds * _MICROSECOND).isoformat()


def block_lines(block: WireBlock) -> list[bytes]:
    """The block's records as JSON lines (``InferenceLogRecord``'s form: a NaN feature as null, any other
    NaN and the infinities as the JSON constants): for the spool, the dead-letter queue and a validation
    that names each bad record. The
    block's columns must describe the same rows (``shape_error`` is None)."""
    times = block.time_vector().tolist()
    latencies = block.latency_vector().tolist()
    features = block.feature_matrix().tolist()
    probabilities = block.probability_vector().tolist()
    return [
        json.dumps(
            {
                "schema_version": block.schema_version,
                "request_id": block.request_ids[i],
                "timestamp": _record_time(times[i]),
                "entity_id": block.entity_ids[i],
                "features": {
                    name: None if math.isnan(value) else value
                    for name, value in zip(FEATURE_NAMES, features[i], strict=True)
                },
                "store_features": block.store_features[i],
                "model_name": block.model_name,
                "model_version": block.model_versions[i],
                "probability": probabilities[i],
                "decision": block.decisions[i],
                "latency_ms": latencies[i],
                "role": str(block.roles[i]),
            },
            separators=(",", ":"),
        ).encode()
        for i in range(block.rows)
    ]


def message_lines(body: bytes, content_type: str | None) -> list[bytes]:
    """The records of a message of either form as JSON lines; raises ``msgspec.DecodeError`` for blocks
    that do not decode, ``ValueError`` for blocks whose columns disagree."""
    if content_type != BLOCKS_CONTENT_TYPE:
        return split_message(body)
    lines = []
    for block in decode_blocks(body):
        if error := block.shape_error():
            raise ValueError(error)
        lines += block_lines(block)
    return lines
