"""The three batch forms of /predict/batch (list of objects, pandas "split", KServe v2 inputs) in process:
the same rows in each form reach Triton as the same matrix and get the same answer; each form's errors
are 422s naming the place (or 413 past MAX_BATCH_SIZE, decided before the rows are validated); and the
fast path of bff.bodies (msgspec structs, numpy columns) gives exactly what the pydantic models give, for any
valid objects, and leaves to the models whatever they alone may judge."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_api_docs import KNOWN_APPLICANT, FakeOnlineStore, Fakes

from bff import bodies
from bff.schemas import FEATURES_EXAMPLE, BatchPrediction, ValidationErrorBody
from bff.settings import Settings
from mlops_common.features import ENTITY_KEY, FEATURE_NAMES, MAX_ENTITY_ID

ROWS = [
    FEATURES_EXAMPLE,
    {**FEATURES_EXAMPLE, "AMT_ANNUITY": None, "DAYS_EMPLOYED": 0},
    {ENTITY_KEY: KNOWN_APPLICANT, **{name: FEATURES_EXAMPLE[name] + 1 for name in FEATURE_NAMES}},
]


def as_split(rows: list[dict]) -> dict:
    columns = [ENTITY_KEY, *FEATURE_NAMES] if any(ENTITY_KEY in r for r in rows) else list(FEATURE_NAMES)
    return {"columns": columns, "data": [[r.get(c) for c in columns] for r in rows]}


def as_v2(rows: list[dict]) -> dict:
    names = [ENTITY_KEY, *FEATURE_NAMES] if any(ENTITY_KEY in r for r in rows) else list(FEATURE_NAMES)
    return {
        "inputs": [
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": "INT64" if name == ENTITY_KEY else "FP64",
                "data": [r.get(name) for r in rows],
            }
            for name in names
        ]
    }


async def post(fakes: Fakes, body, request_id: str = "forms"):
    async with fakes.client() as client:
        return await client.post("/predict/batch", json=body, headers={"X-Request-ID": request_id})


async def test_the_three_forms_reach_triton_as_one_matrix_and_get_one_answer():
    without_id = ROWS[:2]
    answers, matrices = [], []
    for body in (without_id, as_split(without_id), as_v2(without_id)):
        fakes = Fakes(Settings())
        answer = await post(fakes, body)
        assert answer.status_code == 200, answer.text
        answers.append(BatchPrediction.model_validate(answer.json()))
        [matrix] = fakes.triton.matrices
        matrices.append(matrix)
    assert answers[0] == answers[1] == answers[2]
    np.testing.assert_array_equal(matrices[0], matrices[1])
    np.testing.assert_array_equal(matrices[0], matrices[2])
    assert np.isnan(matrices[0][1, FEATURE_NAMES.index("AMT_ANNUITY")])
    assert answers[0].predictions[1].missing_features == ["AMT_ANNUITY"]


@pytest.mark.parametrize("form", [as_split, as_v2])
async def test_columnar_forms_with_ids_read_the_store_for_the_columns_they_leave_out(form):
    body = form([{ENTITY_KEY: KNOWN_APPLICANT, "AMT_CREDIT": 1.0}, {ENTITY_KEY: KNOWN_APPLICANT, "AMT_CREDIT": 2.0}])
    # Only the two given columns: drop the others.
    if "columns" in body:
        keep = [body["columns"].index(ENTITY_KEY), body["columns"].index("AMT_CREDIT")]
        body = {"columns": [body["columns"][k] for k in keep], "data": [[row[k] for k in keep] for row in body["data"]]}
    else:
        body["inputs"] = [i for i in body["inputs"] if i["name"] in (ENTITY_KEY, "AMT_CREDIT")]
    fakes = Fakes(Settings())
    answer = await post(fakes, body)
    assert answer.status_code == 200, answer.text
    [matrix] = fakes.triton.matrices
    stored = FakeOnlineStore.rows[KNOWN_APPLICANT]
    for row, credit in enumerate((1.0, 2.0)):
        expected = {**stored, "AMT_CREDIT": credit}
        assert matrix[row].tolist() == pytest.approx([float(expected[n]) for n in FEATURE_NAMES])
    assert answer.json()["predictions"][0]["features_from_store"] == [n for n in FEATURE_NAMES if n != "AMT_CREDIT"]


async def test_a_columnar_batch_over_the_maximum_is_413_before_its_rows_are_validated():
    fakes = Fakes(Settings(max_batch_size=3))
    bad_rows = [["not a number"] * len(FEATURE_NAMES)] * 4
    split = await post(fakes, {"columns": list(FEATURE_NAMES), "data": bad_rows})
    v2 = await post(fakes, as_v2([FEATURES_EXAMPLE] * 4))
    assert split.status_code == v2.status_code == 413
    assert split.json() == {"detail": "batch of 4 rows exceeds the maximum of 3"}


def _v2_with(**changes) -> dict:
    body = as_v2([FEATURES_EXAMPLE, FEATURES_EXAMPLE])
    body["inputs"][0].update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        # split: a cell of the wrong type, named by row and position
        (
            {"columns": list(FEATURE_NAMES), "data": [[1.0] * 9 + ["0"]]},
            [["body", "data", 0, 9]],
        ),
        ({"columns": list(FEATURE_NAMES), "data": [[1.0] * 9]}, [["body", "data", 0]]),
        ({"columns": [*FEATURE_NAMES, "AMT_CREDIT"], "data": [[1.0] * 11]}, [["body", "columns", 10]]),
        ({"columns": list(FEATURE_NAMES)[:9], "data": [[1.0] * 9]}, [["body", "columns"]]),
        ({"columns": ["AMT_CREDITT"], "data": [[1.0]]}, [["body", "columns", 0]]),
        ({"columns": [ENTITY_KEY], "data": [[1.5]]}, [["body", "data", 0, 0]]),
        ({"columns": [ENTITY_KEY], "data": [[None]]}, [["body", "data", 0, 0]]),
        ({"columns": [ENTITY_KEY], "data": [[float(MAX_ENTITY_ID) * 2]]}, [["body", "data", 0, 0]]),
        ({"columns": list(FEATURE_NAMES), "data": []}, [["body", "data"]]),
        ({"columns": list(FEATURE_NAMES), "data": [[1.0] * 9 + [1e39]]}, [["body", "data", 0, 9]]),
        # v2: shapes, lengths, datatypes, names
        (_v2_with(shape=[3]), [["body", "inputs", 0, "shape"]]),
        (_v2_with(data=[1.0]), [["body", "inputs", 0, "data"]]),
        (_v2_with(datatype="BYTES"), [["body", "inputs", 0, "datatype"]]),
        (_v2_with(datatype="INT64", data=[1.0, 2.5]), [["body", "inputs", 0, "data", 1]]),
        (_v2_with(name=FEATURE_NAMES[1]), [["body", "inputs", 1, "name"]]),
        ({"inputs": []}, [["body", "inputs"]]),
        ({"inputs": [{"name": ENTITY_KEY, "shape": [1], "datatype": "INT64", "data": [True]}]}, None),
    ],
)
async def test_columnar_errors_are_422_naming_the_place(body, locs):
    fakes = Fakes(Settings())
    answer = await post(fakes, body)
    assert answer.status_code == 422, answer.text
    errors = ValidationErrorBody.model_validate(answer.json()).detail
    if locs is not None:
        assert [e.loc for e in errors] == locs
    assert fakes.triton.matrices == []


async def test_non_finite_and_malformed_bodies_are_the_same_422s_as_before():
    fakes = Fakes(Settings())
    async with fakes.client() as client:
        nan = await client.post(
            "/predict/batch",
            content=json.dumps([{**FEATURES_EXAMPLE, "AMT_CREDIT": math.nan}]).encode(),
            headers={"content-type": "application/json"},
        )
        malformed = await client.post(
            "/predict", content=b'{"AMT_CREDIT": ', headers={"content-type": "application/json"}
        )
        empty = await client.post("/predict", content=b"")
    assert nan.status_code == malformed.status_code == empty.status_code == 422
    assert nan.json()["detail"][0]["type"] == "finite_number"
    assert nan.json()["detail"][0]["loc"] == ["body", 0, "AMT_CREDIT"]
    assert malformed.json()["detail"][0]["type"] == "json_invalid"
    assert empty.json()["detail"] == [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]


# -- the fast path equals the models --------------------------------------------------------------------
_numbers = st.one_of(
    st.none(), st.integers(-(10**12), 10**12), st.floats(width=32, allow_nan=False, allow_infinity=False)
)
_rows = st.fixed_dictionaries(
    {name: _numbers for name in FEATURE_NAMES},
    optional={ENTITY_KEY: st.integers(0, MAX_ENTITY_ID)},
)
_keyed_rows = st.fixed_dictionaries(
    {ENTITY_KEY: st.integers(0, MAX_ENTITY_ID)}, optional={name: _numbers for name in FEATURE_NAMES}
)


def fast_path(items: list) -> bodies.Rows | None:
    """What the fast path alone makes of ``items`` sent as a JSON array (None: it leaves them to the models)."""
    decoded = bodies._plain(bodies._PLAIN_OBJECTS, json.dumps(items).encode())
    return None if decoded is None else bodies._objects_fast(decoded)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.one_of(_rows, _keyed_rows), min_size=1, max_size=20))
def test_fast_path_equals_the_models_for_valid_objects(items):
    fast = fast_path(items)
    assert fast is not None  # every one of these is plainly valid
    validated = bodies._objects_validated(items, batch=True)
    np.testing.assert_array_equal(fast.matrix, validated.matrix)
    np.testing.assert_array_equal(fast.given, validated.given)
    assert fast.entity_ids == validated.entity_ids


_feature_rows = st.fixed_dictionaries({name: _numbers for name in FEATURE_NAMES})


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.one_of(st.lists(_feature_rows, min_size=1, max_size=20), st.lists(_keyed_rows, min_size=1, max_size=20)),
    st.sampled_from(["split", "v2"]),
)
def test_the_columnar_fast_path_equals_the_models_for_valid_bodies(items, form):
    body = as_split(items) if form == "split" else as_v2(items)
    fast = bodies._columnar_fast(json.dumps(body).encode(), max_rows=len(items))
    assert fast is not None  # every one of these is plainly valid
    if form == "split":
        validated = bodies._split(bodies._SPLIT.validate_python(body), len(items))
    else:
        validated = bodies._v2(bodies._V2.validate_python(body), len(items))
    np.testing.assert_array_equal(fast.matrix, validated.matrix)
    np.testing.assert_array_equal(fast.given, validated.given)
    assert fast.entity_ids == validated.entity_ids


@pytest.mark.parametrize(
    "body",
    [
        {"columns": [*FEATURE_NAMES, "AMT_CREDIT"], "data": [[1.0] * 11]},  # a column twice
        {"columns": list(FEATURE_NAMES), "data": [[1.0] * 9]},  # a short row
        {"columns": list(FEATURE_NAMES), "data": [[1.0] * 9 + [True]]},
        {"columns": [ENTITY_KEY], "data": [[1.5]]},
        {"columns": list(FEATURE_NAMES), "data": [[1.0] * 10], "extra": 1},
        _v2_with(shape=[3]),
        _v2_with(datatype="INT64", data=[1.0, 2.5]),
        {"inputs": [{"name": ENTITY_KEY, "shape": [1], "datatype": "INT64", "data": [True]}]},
    ],
)
def test_the_columnar_fast_path_leaves_invalid_bodies_to_the_models(body):
    assert bodies._columnar_fast(json.dumps(body).encode(), max_rows=10) is None


@pytest.mark.parametrize(
    "item",
    [
        {ENTITY_KEY: 100002.0},  # an integral JSON number: the models accept it as an id
        {**FEATURES_EXAMPLE, "AMT_CREDIT": True},  # a boolean: the models refuse it
        {**FEATURES_EXAMPLE, "AMT_CREDIT": "1"},
        {**FEATURES_EXAMPLE, "extra": 1},
        {**FEATURES_EXAMPLE, "AMT_CREDIT": 10**400},
        {**FEATURES_EXAMPLE, "AMT_CREDIT": 1e39},  # finite, but infinity as the model's float32
        {**FEATURES_EXAMPLE, "AMT_CREDIT": math.nan},  # NaN, which JSON cannot carry: the models name it
        {ENTITY_KEY: MAX_ENTITY_ID + 1},
        {ENTITY_KEY: -1},
        {k: v for k, v in FEATURES_EXAMPLE.items() if k != "AMT_CREDIT"},
    ],
)
def test_the_fast_path_declines_what_only_the_models_may_judge(item):
    assert fast_path([item]) is None
