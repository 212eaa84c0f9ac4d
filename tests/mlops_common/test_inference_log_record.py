"""The inference-log record contract: validation, exact JSON round trip, the table's rows."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import (
    SCHEMA_VERSION,
    TABLE_SCHEMA,
    InferenceLogRecord,
    encode_message,
    records_to_table,
    split_message,
)

TS = datetime(2026, 5, 4, 13, 45, 6, 789012, tzinfo=UTC)


def fields(**overrides):
    values = {
        "request_id": "r-1",
        "timestamp": TS,
        "entity_id": 100002,
        "features": {name: float(i) + 0.5 for i, name in enumerate(FEATURE_NAMES)},
        "store_features": list(FEATURE_NAMES[5:]),
        "model_name": "credit_default",
        "model_version": "3",
        "probability": 0.125,
        "decision": "approve",
        "latency_ms": 4.25,
    }
    return {**values, **overrides}


def test_json_round_trip_is_exact_including_missing_and_non_finite_features():
    features = dict(fields()["features"])
    features[FEATURE_NAMES[0]] = None
    features[FEATURE_NAMES[1]] = math.nan
    features[FEATURE_NAMES[2]] = -math.inf
    features[FEATURE_NAMES[3]] = 0.1 + 0.2  # not representable in float32: kept as sent
    record = InferenceLogRecord(**fields(features=features))
    back = InferenceLogRecord.from_json_bytes(record.to_json_bytes())
    assert back.schema_version == SCHEMA_VERSION
    assert back.features[FEATURE_NAMES[0]] is None
    assert math.isnan(back.features[FEATURE_NAMES[1]])
    assert back.features[FEATURE_NAMES[2]] == -math.inf
    assert back.features[FEATURE_NAMES[3]] == 0.1 + 0.2
    assert back.model_dump(exclude={"features"}) == record.model_dump(exclude={"features"})


def test_features_are_kept_in_contract_order_and_timestamps_in_utc():
    shuffled = dict(reversed(list(fields()["features"].items())))
    plus_two = TS.astimezone(timezone(timedelta(hours=2)))
    record = InferenceLogRecord(**fields(features=shuffled, timestamp=plus_two))
    assert list(record.features) == list(FEATURE_NAMES)
    assert record.timestamp == TS
    assert record.timestamp.tzinfo == UTC


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"timestamp": TS.replace(tzinfo=None)}, "timestamp"),
        ({"features": {name: 1.0 for name in FEATURE_NAMES[1:]}}, "features"),
        ({"features": {**dict.fromkeys(FEATURE_NAMES, 1.0), "EXTRA": 1.0}}, "features"),
        ({"store_features": ["NOT_A_FEATURE"]}, None),
        ({"store_features": [FEATURE_NAMES[0], FEATURE_NAMES[0]]}, None),
        ({"model_name": "a/b"}, "model_name"),
        ({"model_version": ""}, "model_version"),
        ({"probability": 1.5}, "probability"),
        ({"probability": math.nan}, "probability"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"request_id": ""}, "request_id"),
        ({"schema_version": 3}, "schema_version"),
        ({"role": "canary-ish"}, "role"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_invalid_records_are_refused(overrides, field):
    with pytest.raises(ValidationError) as err:
        InferenceLogRecord(**fields(**overrides))
    if field is not None:
        assert field in {str(e["loc"][0]) for e in err.value.errors()}


def test_unparseable_bytes_raise_value_error():
    for data in (b"not json", b"{}", json.dumps({**fields(), "timestamp": "yesterday"}).encode()):
        with pytest.raises(ValueError, match=r"validation errors? for InferenceLogRecord"):
            InferenceLogRecord.from_json_bytes(data)


def test_messages_are_json_lines():
    records = [InferenceLogRecord(**fields(request_id=f"r-{i}")).to_json_bytes() for i in range(3)]
    body = encode_message(records)
    assert body.count(b"\n") == 2
    assert split_message(body + b"\n\n") == records


def test_rows_hold_one_row_per_record_with_one_column_per_feature_and_the_utc_date():
    records = [InferenceLogRecord(**fields(request_id=f"r-{i}", entity_id=None if i else 7)) for i in range(3)]
    table = records_to_table(records)
    assert table.schema == TABLE_SCHEMA
    rows = table.to_pylist()
    assert [r["request_id"] for r in rows] == ["r-0", "r-1", "r-2"]
    assert [r["entity_id"] for r in rows] == [7, None, None]
    assert rows[0]["timestamp"] == TS
    assert rows[0]["date"] == "2026-05-04"
    assert [rows[0][name] for name in FEATURE_NAMES] == list(records[0].features.values())
    assert rows[0]["store_features"] == list(FEATURE_NAMES[5:])


def test_the_date_partition_is_the_utc_day():
    late_evening_in_new_york = datetime(2026, 5, 4, 22, 30, tzinfo=timezone(timedelta(hours=-4)))
    record = InferenceLogRecord(**fields(timestamp=late_evening_in_new_york))
    assert records_to_table([record])["date"].to_pylist() == ["2026-05-05"]


def test_a_version_1_record_is_read_as_the_champions():
    old = json.loads(InferenceLogRecord(**fields()).to_json_bytes())
    old["schema_version"] = 1
    del old["role"]
    record = InferenceLogRecord.from_json_bytes(json.dumps(old))
    assert (record.schema_version, record.role) == (1, "champion")
    assert records_to_table([record])["role"].to_pylist() == ["champion"]
