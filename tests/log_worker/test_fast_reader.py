"""The log worker's fast reader (``lines_to_table``, msgspec) against the definition of a valid record
(``InferenceLogRecord``, pydantic): where the fast reader takes a message, its rows are exactly the
model's; every line the model refuses, the fast reader refuses too (then the model decides)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from log_pipeline import make_record
from pydantic import ValidationError

from bff.inference_log import encode_records
from log_worker.fast_reader import lines_to_table
from log_worker.worker import parse_message
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import InferenceLogRecord, encode_message, records_to_table
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


def test_the_bffs_records_are_read_fast_into_the_models_rows():
    rng = np.random.default_rng(3)
    n = 64
    matrix = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    matrix[rng.random(matrix.shape) < 0.2] = np.nan
    lines = encode_records(
        request_ids=[f"abc-{i}" for i in range(n)],
        timestamp=datetime(2026, 5, 5, 1, 30, tzinfo=timezone(timedelta(hours=2))),  # 23:30 UTC the day before
        entity_ids=[None if i % 3 else 100000 + i for i in range(n)],
        features=matrix,
        store_features=[list(FEATURE_NAMES[: i % 4]) for i in range(n)],
        model_name="credit_default",
        model_versions=["2" if i % 2 else "10" for i in range(n)],
        probabilities=rng.random(n).tolist(),
        decisions=["approve" if i % 2 else "review" for i in range(n)],
        latency_ms=3.25,
        roles=[Role.SHADOW if i % 5 == 0 else Role.CHAMPION for i in range(n)],
    )
    rows = lines_to_table(lines)
    assert rows is not None
    assert same_rows(rows, model_rows(lines))
    assert set(rows["date"].to_pylist()) == {"2026-05-04"}
    parsed = parse_message(encode_message(lines))
    assert same_rows(parsed.rows, rows)
    assert (parsed.row_lines, parsed.rejects) == (list(range(n)), [])


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


def test_nan_is_written_by_the_bff_as_null_and_read_as_null():
    lines = encode_records(
        request_ids=["n-0"],
        timestamp=TS,
        entity_ids=[None],
        features=np.full((1, len(FEATURE_NAMES)), np.nan, dtype=np.float32),
        store_features=[[]],
        model_name="credit_default",
        model_versions=["1"],
        probabilities=[0.5],
        decisions=["review"],
        latency_ms=1.0,
        roles=[Role.CHAMPION],
    )
    rows = lines_to_table(lines)
    assert rows is not None
    assert all(rows[name].null_count == 1 for name in FEATURE_NAMES)
    assert not any(math.isnan(v) for name in FEATURE_NAMES for v in rows[name].drop_null().to_pylist())
