"""The log worker's fast readers (``blocks_to_table`` and ``lines_to_table``, msgspec) against the
definition of a valid record (``InferenceLogRecord``, pydantic): where a fast reader takes a message, its
rows are exactly the model's; every record the model refuses, the fast readers refuse too (then the
model decides, and names the bad record)."""

from __future__ import annotations

import gc
import json
import math
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from log_pipeline import make_record
from pydantic import ValidationError

from log_worker.fast_reader import blocks_to_table, lines_to_table
from log_worker.worker import parse_message
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import MESSAGE_CONTENT_TYPE, InferenceLogRecord, encode_message, records_to_table
from mlops_common.inference_log_wire import (
    BLOCKS_CONTENT_TYPE,
    WireBlock,
    block_lines,
    decode_blocks,
    encode_blocks_message,
    extend_block,
    log_block,
    open_block,
)
from mlops_common.rollout import Role

TS = datetime(2026, 5, 4, 23, 59, 59, 999999, tzinfo=UTC)


# One valid record as the JSON object on the wire.
VALID = json.loads(make_record("r-1").to_json_bytes())


def record_fields(**overrides) -> dict:
    return {**VALID, "features": dict(VALID["features"]), **overrides}


def line(**overrides) -> bytes:
    return json.dumps(record_fields(**overrides)).encode()


def model_rows(lines: list[bytes]) -> pa.Table:
    return records_to_table([InferenceLogRecord.from_json_bytes(each) for each in lines])


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values, NaN equal to NaN (``Table.equals`` says NaN != NaN)."""
    return a.schema == b.schema and repr(a.to_pylist()) == repr(b.to_pylist())


def bff_block(n: int = 64, seed: int = 3) -> WireBlock:
    """A block as the BFF writes one: NaN features, rows with and without an entity, every role."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    matrix[rng.random(matrix.shape) < 0.2] = np.nan
    return log_block(
        request_ids=[f"abc-{i}" for i in range(n)],
        timestamp=datetime(2026, 5, 5, 1, 30, tzinfo=timezone(timedelta(hours=2))),  # 23:30 UTC the day before
        entity_ids=[None if i % 3 else 100000 + i for i in range(n)],
        features=matrix,
        store_features=[list(FEATURE_NAMES[: i % 4]) for i in range(n)],
        model_name="credit_default",
        model_versions=["2" if i % 2 else "10" for i in range(n)],
        probabilities=rng.random(n).astype(np.float32),
        decisions=["approve" if i % 2 else "review" for i in range(n)],
        latency_ms=3.25,
        roles=[Role.SHADOW if i % 5 == 0 else Role.CHAMPION for i in range(n)],
    )


def test_the_bffs_blocks_are_read_fast_into_the_models_rows():
    blocks = [bff_block(64, seed=3), bff_block(1, seed=4), bff_block(2, seed=5)]
    lines = [line for block in blocks for line in block_lines(block)]
    rows = blocks_to_table(blocks)
    assert rows is not None
    assert same_rows(rows, model_rows(lines))
    assert same_rows(rows, lines_to_table(lines))
    assert set(rows["date"].to_pylist()) == {"2026-05-04"}
    # As published: the blocks waiting for a message gathered into one, as the publisher's buffer does.
    merged = open_block(blocks[0])
    for block in blocks[1:]:
        extend_block(merged, block)
    assert block_lines(merged) == lines
    parsed = parse_message(encode_blocks_message([merged]), BLOCKS_CONTENT_TYPE)
    assert same_rows(parsed.rows, rows)
    assert (parsed.row_lines, parsed.rejects, parsed.lines) == (list(range(67)), [], lines)


def test_a_parsed_message_of_blocks_keeps_no_object_per_record_for_the_garbage_collector():
    # The worker holds a batch's parsed messages until the batch is written (up to BATCH_MAX_RECORDS records):
    # objects the collector tracks, kept that long, would be walked by each of its passes.
    body = encode_blocks_message([bff_block(2000)])
    gc.collect()
    gc.disable()
    try:
        tracked_before = len(gc.get_objects())
        parsed = parse_message(body, BLOCKS_CONTENT_TYPE)
        tracked = len(gc.get_objects()) - tracked_before
    finally:
        gc.enable()
    assert parsed.rows.num_rows == 2000
    assert tracked < 200, tracked


def test_the_records_of_a_block_are_the_records_the_model_would_write():
    """log_block (the request path's) carries what InferenceLogRecord reads back, field for field, once
    encoded and decoded: float32 values exactly, NaN features as missing, rows without an id, every role."""
    features = np.array([[1.1] * len(FEATURE_NAMES), [np.nan] + [2.0] * (len(FEATURE_NAMES) - 1)], dtype=np.float32)
    block = log_block(
        request_ids=["r-0", "r-1"],
        timestamp=TS,
        entity_ids=[100002, None],
        features=features,
        store_features=[list(FEATURE_NAMES[1:3]), []],
        model_name="credit_default",
        model_versions=["3", "4"],
        probabilities=np.array([0.1, 0.75], dtype=np.float32),
        decisions=["approve", "reject"],
        latency_ms=2.5,
        roles=[Role.CHAMPION, Role.CANARY],
    )
    common = {"timestamp": TS, "model_name": "credit_default", "latency_ms": 2.5}
    expected = [
        InferenceLogRecord(
            request_id="r-0",
            entity_id=100002,
            features=dict.fromkeys(FEATURE_NAMES, float(np.float32(1.1))),
            store_features=list(FEATURE_NAMES[1:3]),
            model_version="3",
            probability=float(np.float32(0.1)),
            decision="approve",
            role=Role.CHAMPION,
            **common,
        ),
        InferenceLogRecord(
            request_id="r-1",
            entity_id=None,
            features={name: None if k == 0 else 2.0 for k, name in enumerate(FEATURE_NAMES)},
            model_version="4",
            probability=0.75,
            decision="reject",
            role=Role.CANARY,
            **common,
        ),
    ]
    [read] = decode_blocks(encode_blocks_message([block]))
    assert [InferenceLogRecord.from_json_bytes(line) for line in block_lines(read)] == expected


def test_defaults_and_older_schema_versions_are_read_like_the_model_reads_them():
    lines = [
        json.dumps({k: v for k, v in record_fields().items() if k not in ("role", "entity_id", "store_features")}),
        line(schema_version=1, timestamp="2026-05-04T22:00:00-03:00", entity_id=None, store_features=[]),
        line(features={**record_fields()["features"], FEATURE_NAMES[0]: 7}),  # an integer value
    ]
    lines = [each.encode() if isinstance(each, str) else each for each in lines]
    rows = lines_to_table(lines)
    assert rows is not None
    assert same_rows(rows, model_rows(lines))


# Lines the model refuses, one constraint each, and lines it takes that the fast reader leaves to it.
FEATURES = record_fields()["features"]
REFUSED_BY_THE_MODEL = {
    "empty request id": line(request_id=""),
    "request id too long": line(request_id="r" * 129),
    "naive timestamp": line(timestamp="2026-05-04T10:00:00"),
    "not a timestamp": line(timestamp="yesterday"),
    "model name with a slash": line(model_name="a/b"),
    "model name ending in a newline": line(model_name="credit_default\n"),
    "model version ending in a newline": line(model_version="3\n"),
    "probability above 1": line(probability=1.5),
    "negative latency": line(latency_ms=-1.0),
    "infinite latency": line(latency_ms=1).replace(b'"latency_ms": 1', b'"latency_ms": 1e999'),
    "NaN probability": line(probability=0.5).replace(b'"probability": 0.5', b'"probability": NaN'),
    "empty decision": line(decision=""),
    "unknown schema version": line(schema_version=3),
    "unknown role": line(role="boss"),
    "unknown field": line(extra=1),
    "a feature missing": line(features={k: v for k, v in FEATURES.items() if k != FEATURE_NAMES[4]}),
    "an unknown feature": line(features={**FEATURES, "AGE": 1.0}),
    "a feature as text": line(features={**FEATURES, FEATURE_NAMES[0]: "x"}),
    "store feature unknown": line(store_features=["AGE"]),
    "store feature twice": line(store_features=[FEATURE_NAMES[0], FEATURE_NAMES[0]]),
    "request id missing": json.dumps({k: v for k, v in record_fields().items() if k != "request_id"}).encode(),
    "not an object": b"[1, 2]",
    "not JSON": b"{oops",
}


@pytest.mark.parametrize("bad", REFUSED_BY_THE_MODEL.values(), ids=REFUSED_BY_THE_MODEL.keys())
def test_a_line_the_model_refuses_is_refused_by_the_fast_reader(bad):
    with pytest.raises(ValidationError):
        InferenceLogRecord.from_json_bytes(bad)
    assert lines_to_table([line(), bad]) is None
    parsed = parse_message(encode_message([line(), bad]))
    assert same_rows(parsed.rows, model_rows([line()]))
    assert [(r.line, r.kind) for r in parsed.rejects] == [(bad, "invalid")]


LEFT_TO_THE_MODEL = {
    "NaN feature": line(features={**FEATURES, FEATURE_NAMES[0]: math.nan}),
    "entity id as a float": line(entity_id=100002.0),
    "probability as text": line(probability="0.5"),
}


@pytest.mark.parametrize("odd", LEFT_TO_THE_MODEL.values(), ids=LEFT_TO_THE_MODEL.keys())
def test_a_valid_line_the_fast_reader_does_not_vouch_for_is_read_by_the_model(odd):
    assert lines_to_table([line(), odd]) is None
    parsed = parse_message(encode_message([line(), odd]))
    assert parsed.rejects == []
    assert same_rows(parsed.rows, model_rows([line(), odd]))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
FIELDS = list(record_fields())


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    changes=st.dictionaries(
        st.sampled_from([*FIELDS, *(f"features.{name}" for name in FEATURE_NAMES)]),
        json_values | st.just(None),
        min_size=1,
        max_size=3,
    ),
    dropped=st.lists(st.sampled_from(FIELDS), max_size=2),
)
def test_the_fast_reader_takes_a_changed_record_only_as_the_model_does(changes, dropped):
    fields = record_fields()
    fields["features"] = dict(fields["features"])
    for key, value in changes.items():
        if key.startswith("features."):
            if isinstance(fields["features"], dict):
                fields["features"][key.removeprefix("features.")] = value
        else:
            fields[key] = value
    for key in dropped:
        fields.pop(key, None)
    candidate = json.dumps(fields).encode()
    fast = lines_to_table([candidate])
    try:
        expected = model_rows([candidate])
    except (ValidationError, pa.ArrowException, ValueError, TypeError, OverflowError):
        assert fast is None
        return
    if fast is not None:
        assert same_rows(fast, expected)


def test_nan_is_written_by_the_bff_as_missing_and_read_as_null():
    block = log_block(
        request_ids=["n-0"],
        timestamp=TS,
        entity_ids=[None],
        features=np.full((1, len(FEATURE_NAMES)), np.nan, dtype=np.float32),
        store_features=[[]],
        model_name="credit_default",
        model_versions=["1"],
        probabilities=np.array([0.5]),
        decisions=["review"],
        latency_ms=1.0,
        roles=[Role.CHAMPION],
    )
    for rows in (blocks_to_table([block]), lines_to_table(block_lines(block))):
        assert rows is not None
        assert all(rows[name].null_count == 1 for name in FEATURE_NAMES)
        assert not any(math.isnan(v) for name in FEATURE_NAMES for v in rows[name].drop_null().to_pylist())


# -- blocks that are not plain valid records ---------------------------------------------------------------
def block_fields() -> dict:
    block = bff_block(4, seed=5)
    return {name: getattr(block, name) for name in WireBlock.__struct_fields__}


def block_with(**changes) -> bytes:
    """A four-row block with some columns changed, encoded (msgspec encodes what it is given, valid or not)."""
    return msgspec.msgpack.encode(WireBlock(**{**block_fields(), **changes}))


def with_row_2(column: str, value) -> bytes:
    values = list(block_fields()[column])
    values[2] = value
    return block_with(**{column: values})


def with_value_2(column: str, value: float, dtype: str = "<f8") -> bytes:
    values = np.frombuffer(block_fields()[column], dtype).copy()
    values[2] = value
    return block_with(**{column: values.tobytes()})


def message(*blocks: bytes) -> bytes:
    """A message of encoded blocks, valid or not (a msgpack array)."""
    return bytes([0x90 | len(blocks)]) + b"".join(blocks)


def decoded(block: bytes) -> WireBlock:
    [read] = decode_blocks(message(block))
    return read


GOOD = msgspec.msgpack.encode(bff_block(3))
NEIGHBOUR = msgspec.msgpack.encode(bff_block(2, seed=9))

# Row 2 of a block made one that the model refuses.
ROW_REFUSED_BY_THE_MODEL = {
    "empty request id": with_row_2("request_ids", ""),
    "request id too long": with_row_2("request_ids", "r" * 129),
    "model version with a slash": with_row_2("model_versions", "a/b"),
    "probability above 1": with_value_2("probabilities", 1.5),
    "NaN probability": with_value_2("probabilities", math.nan),
    "negative latency": with_value_2("latencies_ms", -1.0),
    "infinite latency": with_value_2("latencies_ms", math.inf),
    "a time past year 9999": with_value_2("timestamps", 2**62, "<i8"),
    "empty decision": with_row_2("decisions", ""),
    "store feature unknown": with_row_2("store_features", ["AGE"]),
    "store feature twice": with_row_2("store_features", [FEATURE_NAMES[0], FEATURE_NAMES[0]]),
}


@pytest.mark.parametrize("bad", ROW_REFUSED_BY_THE_MODEL.values(), ids=ROW_REFUSED_BY_THE_MODEL.keys())
def test_a_block_row_the_model_refuses_is_dead_lettered_alone_as_a_json_line(bad):
    lines = block_lines(decoded(bad))
    with pytest.raises(ValidationError):
        InferenceLogRecord.from_json_bytes(lines[2])
    assert blocks_to_table([decoded(bad)]) is None
    parsed = parse_message(message(GOOD, bad), BLOCKS_CONTENT_TYPE)
    kept = block_lines(decoded(GOOD)) + [lines[i] for i in (0, 1, 3)]
    assert same_rows(parsed.rows, model_rows(kept))
    assert [(r.line, r.kind, r.content_type) for r in parsed.rejects] == [(lines[2], "invalid", MESSAGE_CONTENT_TYPE)]
    assert parsed.rejects[0].reason.startswith("invalid inference-log record (1 errors): ")


def test_a_block_whose_model_name_the_model_refuses_is_dead_lettered_record_by_record():
    bad = block_with(model_name="a/b")
    assert blocks_to_table([decoded(bad)]) is None
    parsed = parse_message(message(bad), BLOCKS_CONTENT_TYPE)
    assert parsed.rows.num_rows == 0
    assert [r.line for r in parsed.rejects] == block_lines(decoded(bad))
    assert all("model_name: String should match pattern" in r.reason for r in parsed.rejects)


UNREADABLE_BLOCKS = {
    "a column too short": (block_with(decisions=["approve"] * 3), "decisions"),
    "features not whole rows": (block_with(features=b"\0" * 13), "features"),
    "a request id as a number": (
        with_row_2("request_ids", 7),
        "#1 of its message): Expected `str`, got `int` - at `$.request_ids[2]`",
    ),
    "unknown schema version": (block_with(schema_version=3), "Invalid enum value 3 - at `$.schema_version`"),
    "unknown role": (with_row_2("roles", "boss"), "at `$.roles[2]`"),
    "times as text": (block_with(timestamps="2026-05-04"), "Expected `bytes`, got `str` - at `$.timestamps`"),
    "a column missing": (
        msgspec.msgpack.encode(list(block_fields().values())[:-1]),
        "Expected `array` of at least length 12, got 11",
    ),
}


@pytest.mark.parametrize(("bad", "named"), UNREADABLE_BLOCKS.values(), ids=UNREADABLE_BLOCKS.keys())
def test_a_block_that_does_not_decode_is_dead_lettered_whole_and_its_neighbours_are_kept(bad, named):
    parsed = parse_message(message(GOOD, bad, NEIGHBOUR), BLOCKS_CONTENT_TYPE)
    assert same_rows(parsed.rows, model_rows(block_lines(decoded(GOOD)) + block_lines(decoded(NEIGHBOUR))))
    [reject] = parsed.rejects
    assert (reject.line, reject.kind, reject.content_type) == (message(bad), "invalid", BLOCKS_CONTENT_TYPE)
    assert named in reject.reason
    # Dead-lettered as a message of that block alone: a replay reads it again, and refuses it again.
    again = parse_message(reject.line, BLOCKS_CONTENT_TYPE)
    assert again.rows.num_rows == 0
    assert len(again.rejects) == 1


@pytest.mark.parametrize(
    "body", [b"", b"\x90", b"\xc1", b"not msgpack"], ids=["nothing", "no blocks", "reserved byte", "text"]
)
def test_a_message_that_holds_no_blocks_is_dead_lettered_whole(body):
    [reject] = parse_message(body, BLOCKS_CONTENT_TYPE).rejects
    assert (reject.line, reject.kind, reject.content_type) == (body, "invalid", BLOCKS_CONTENT_TYPE)


block_changes = st.fixed_dictionaries(
    {},
    optional={
        "request_ids": st.text(max_size=130),
        "model_versions": st.text(max_size=5),
        "decisions": st.text(max_size=66),
        "store_features": st.lists(st.sampled_from([*FEATURE_NAMES[:3], "AGE"]), max_size=3),
        "probabilities": st.floats(),
        "latencies_ms": st.floats(),
        "timestamps": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "entity_ids": st.none() | st.integers(min_value=-(2**64), max_value=2**64 - 1),
    },
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(changes=block_changes, features=st.lists(st.floats(width=64), min_size=10, max_size=10))
def test_the_fast_reader_takes_a_changed_block_only_as_the_model_does(changes, features):
    fields = block_fields()
    matrix = np.frombuffer(fields["features"], np.float64).reshape(-1, len(FEATURE_NAMES)).copy()
    matrix[1] = features
    fields["features"] = matrix.tobytes()
    for column, value in changes.items():
        if column in ("probabilities", "latencies_ms", "timestamps"):
            values = np.frombuffer(fields[column], "<i8" if column == "timestamps" else "<f8").copy()
            values[1] = value
            fields[column] = values.tobytes()
        else:
            fields[column] = [*fields[column][:1], value, *fields[column][2:]]
    block = decoded(msgspec.msgpack.encode(WireBlock(**fields)))
    fast = blocks_to_table([block])
    try:
        expected = model_rows(block_lines(block))
    except (ValidationError, pa.ArrowException, ValueError, TypeError, OverflowError):
        assert fast is None
        return
    if fast is not None:
        assert same_rows(fast, expected)
