"""Prediction request bodies -> columns: a float32 feature matrix, which features the body gave, the ids.

Three batch forms reach the same columns: a JSON array of /predict objects, pandas' "split" orientation
(``{"columns": [...], "data": [[...], ...]}``) and the KServe v2 / Open Inference Protocol JSON body (one
input tensor per feature). A valid body of the usual kind is converted column by column with numpy, never
through a pydantic model per row: msgspec decodes the body straight into structs that mirror the request
models (``bff.schemas``), checking types, bounds and names in C (no dict per object). Anything the fast path
does not recognise as valid goes through the pydantic models instead, so that the 422 lists every invalid
field with its path exactly as FastAPI would (and a valid body the fast path declined still gets the same
columns).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from bff.schemas import FLOAT32_MAX, InferenceRequest, PredictRequest, SplitBatch
from mlops_common.features import ENTITY_KEY, FEATURE_DTYPE, FEATURE_NAMES, MAX_ENTITY_ID

N_FEATURES = len(FEATURE_NAMES)
MISSING_FEATURE_MESSAGE = f"Field required when {ENTITY_KEY} is not given (null if the value is unknown)"
# The fast path's structs: what the models accept without converting (numbers within float32's range, or
# null; an integer id in range; the same names and shapes), no other field.
_Value = Annotated[float, msgspec.Meta(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
_ColumnName = Literal[(*FEATURE_NAMES, ENTITY_KEY)]  # type: ignore[valid-type]
# A /predict object. A feature it leaves out reads as infinity, which no JSON number within those bounds can
# be. Not tracked by the garbage collector: numbers only, so no cycle.
_LEFT_OUT = math.inf
_PlainObject = msgspec.defstruct(
    "_PlainObject",
    [
        (ENTITY_KEY, Annotated[int, msgspec.Meta(ge=0, le=MAX_ENTITY_ID)] | None, None),
        *((name, _Value | None, _LEFT_OUT) for name in FEATURE_NAMES),
    ],
    forbid_unknown_fields=True,
    gc=False,
)


class _PlainSplit(msgspec.Struct, forbid_unknown_fields=True):
    """``bff.schemas.SplitBatch``."""

    columns: Annotated[list[_ColumnName], msgspec.Meta(min_length=1)]
    data: Annotated[list[list[_Value | None]], msgspec.Meta(min_length=1)]
    index: list[Any] | None = None


class _PlainInput(msgspec.Struct, forbid_unknown_fields=True):
    """``bff.schemas.InferInput``."""

    name: _ColumnName
    shape: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]], msgspec.Meta(min_length=1, max_length=2)]
    datatype: Literal["FP32", "FP64", "INT32", "INT64"]
    data: list[_Value | None]
    parameters: dict[str, Any] | None = None


class _PlainInferenceRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``bff.schemas.InferenceRequest``."""

    inputs: Annotated[list[_PlainInput], msgspec.Meta(min_length=1, max_length=N_FEATURES + 1)]
    id: str | None = None
    parameters: dict[str, Any] | None = None


_PLAIN_OBJECT = msgspec.json.Decoder(_PlainObject)
_PLAIN_OBJECTS = msgspec.json.Decoder(list[_PlainObject])
_PLAIN_SPLIT = msgspec.json.Decoder(_PlainSplit)
_PLAIN_V2 = msgspec.json.Decoder(_PlainInferenceRequest)
# An object's features in FEATURE_NAMES' order, and its id, in C.
_FEATURE_VALUES = attrgetter(*FEATURE_NAMES)
_ENTITY_ID = attrgetter(ENTITY_KEY)
_OBJECTS = TypeAdapter(list[PredictRequest])
_OBJECT = TypeAdapter(PredictRequest)
_SPLIT = TypeAdapter(SplitBatch)
_V2 = TypeAdapter(InferenceRequest)


# A body that is not UTF-8 is malformed JSON like any other: the documented 422, not a bare 400.
NOT_UTF8 = {"type": "json_invalid", "loc": ["body"], "msg": "body is not UTF-8 encoded JSON", "input": None}


def feature_names_where(mask: np.ndarray) -> list[list[str]]:
    """Per row of a [n, N_FEATURES] mask, the names of the features where it is true (rows with none: no loop)."""
    names: list[list[str]] = [[] for _ in range(len(mask))]
    if not mask.any():  # the usual request, every feature given: one check
        return names
    for row in np.flatnonzero(mask.any(axis=1)):
        names[row] = [FEATURE_NAMES[j] for j in np.flatnonzero(mask[row])]
    return names


@dataclass(frozen=True)
class Rows:
    """A request's rows, in columns."""

    matrix: np.ndarray  # float32 [n, N_FEATURES]: the body's values; NaN where null or not given
    given: np.ndarray  # bool [n, N_FEATURES]: the body gave the feature (a value or null)
    entity_ids: list[int | None]

    def __len__(self) -> int:
        return len(self.entity_ids)


class BatchTooLarge(Exception):
    def __init__(self, rows: int):
        self.rows = rows


def parse_single(body: bytes) -> Rows:
    """The body of /predict: one object."""
    item = _plain(_PLAIN_OBJECT, body)
    rows = None if item is None else _objects_fast([item])
    if rows is not None:
        return rows
    return _objects_validated([_load(body)], batch=False)


def parse_batch(body: bytes, max_rows: int) -> Rows:
    """The body of /predict/batch in any of its forms; BatchTooLarge past ``max_rows``, checked before
    the rows are validated."""
    items = _plain(_PLAIN_OBJECTS, body)
    if items:
        if len(items) > max_rows:
            raise BatchTooLarge(len(items))
        rows = _objects_fast(items)
        if rows is not None:
            return rows
    rows = _columnar_fast(body, max_rows)
    if rows is not None:
        return rows
    value = _load(body)
    if isinstance(value, dict) and "columns" in value:
        data = value.get("data")
        if isinstance(data, list) and len(data) > max_rows:
            raise BatchTooLarge(len(data))
        return _split(_validated(_SPLIT, value), max_rows)
    if isinstance(value, dict) and "inputs" in value:
        inputs = value.get("inputs")
        if isinstance(inputs, list):
            _check_v2_size((i.get("data") for i in inputs if isinstance(i, dict)), max_rows)
        return _v2(_validated(_V2, value), max_rows)
    if isinstance(value, list):
        if not value:
            raise RequestValidationError([_error("too_short", [], "batch is empty", [])])
        if len(value) > max_rows:
            raise BatchTooLarge(len(value))
    return _objects_validated(value, batch=True)


# -- parsing -----------------------------------------------------------------------------------------
def _plain(decoder: msgspec.json.Decoder, body: bytes) -> Any:
    """The body decoded by one of the fast path's decoders, or None where the decoder refuses it."""
    try:
        return decoder.decode(body)
    except msgspec.MsgspecError:
        return None


def _load(body: bytes) -> Any:
    """The body's JSON."""
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses what the standard library reads (NaN, Infinity): read it the FastAPI way, so that the
    # models refuse non-finite numbers by name, and malformed JSON is reported as FastAPI reports it.
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestValidationError([NOT_UTF8]) from None
    except json.JSONDecodeError as err:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", err.pos],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": err.msg},
                }
            ]
        ) from None


def _error(kind: str, loc: Iterable[str | int], msg: str, given: Any) -> dict[str, Any]:
    return {"type": kind, "loc": ["body", *loc], "msg": msg, "input": given}


def _validated(adapter: TypeAdapter, value: Any) -> Any:
    """``value`` through a pydantic model, its errors as FastAPI reports a body's."""
    try:
        return adapter.validate_python(value)
    except ValidationError as err:
        raise _validation_errors(err) from None


def _validation_errors(err: ValidationError, loc: Iterable[str | int] = ()) -> RequestValidationError:
    """pydantic's errors as FastAPI reports a body's: located under "body", without the docs URL."""
    prefix = ["body", *loc]
    return RequestValidationError(
        [
            {k: v for k, v in {**e, "loc": [*prefix, *e["loc"]]}.items() if k != "url"}
            for e in err.errors(include_url=False)
        ]
    )


# -- a list of objects -------------------------------------------------------------------------------
def _objects_fast(items: list) -> Rows | None:
    """Columns of decoded plain objects, or None when an object without an id leaves a feature out (the
    models then name each one)."""
    matrix = np.array(list(map(_FEATURE_VALUES, items)), dtype=np.float64)  # None -> NaN
    given = matrix != _LEFT_OUT
    ids = list(map(_ENTITY_ID, items))
    if not given.all():
        if (~given[[i is None for i in ids]]).any():
            return None
        matrix[~given] = np.nan
    return Rows(matrix.astype(FEATURE_DTYPE), given, ids)


def _objects_validated(items: Any, *, batch: bool) -> Rows:
    """Columns through the pydantic models: every invalid field reported, as FastAPI would."""
    models = _validated(_OBJECTS, items) if batch else [_validated(_OBJECT, items[0])]
    errors = []
    for index, model in enumerate(models):
        if getattr(model, ENTITY_KEY) is None:
            # Absent, not null: a typo must not turn into a silently missing value.
            errors += [
                _error("missing", [index, name] if batch else [name], MISSING_FEATURE_MESSAGE, None)
                for name in FEATURE_NAMES
                if name not in model.model_fields_set
            ]
    if errors:
        raise RequestValidationError(errors)
    given = np.array([[name in m.model_fields_set for name in FEATURE_NAMES] for m in models], dtype=bool)
    values = [[getattr(m, name) for name in FEATURE_NAMES] for m in models]
    matrix = np.array(values, dtype=np.float64).astype(FEATURE_DTYPE)  # None -> NaN
    return Rows(matrix, given, [getattr(m, ENTITY_KEY) for m in models])


# -- columnar forms ----------------------------------------------------------------------------------
def _columnar_fast(body: bytes, max_rows: int) -> Rows | None:
    """Rows of a plainly valid columnar body, or None for anything else: the models' objects then name the
    errors (the checks below raise the same ones from either kind of object, but the models echo the values
    as the body gave them)."""
    for decoder, rows_of in ((_PLAIN_SPLIT, _split), (_PLAIN_V2, _v2)):
        decoded = _plain(decoder, body)
        if decoded is not None:
            try:
                return rows_of(decoded, max_rows)
            except RequestValidationError:
                return None
    return None


def _split(split: SplitBatch | _PlainSplit, max_rows: int) -> Rows:
    if len(split.data) > max_rows:
        raise BatchTooLarge(len(split.data))
    columns = split.columns
    errors = _duplicate_names(columns, "columns")
    errors += [
        _error("row_length", ["data", i], f"row has {len(row)} values for {len(columns)} columns", row)
        for i, row in enumerate(split.data)
        if len(row) != len(columns)
    ]
    if errors:
        raise RequestValidationError(errors)
    by_column = list(zip(*split.data, strict=True))
    return _from_columns(
        {name: list(by_column[j]) for j, name in enumerate(columns)},
        len(split.data),
        lambda name, row: ["data", row, columns.index(name)],
        ["columns"],
    )


def _check_v2_size(datas: Iterable[Any], max_rows: int) -> None:
    """BatchTooLarge when an input's data is longer than ``max_rows`` (a data that is not a list: not here)."""
    rows = max((len(data) for data in datas if isinstance(data, list)), default=0)
    if rows > max_rows:
        raise BatchTooLarge(rows)


def _v2(request: InferenceRequest | _PlainInferenceRequest, max_rows: int) -> Rows:
    _check_v2_size((tensor.data for tensor in request.inputs), max_rows)
    names = [i.name for i in request.inputs]
    errors = _duplicate_names(names, "inputs", "name")
    # The rows: the length most inputs agree on; the inputs that disagree are named.
    n = Counter(tensor.shape[0] for tensor in request.inputs).most_common(1)[0][0]
    for k, tensor in enumerate(request.inputs):
        if tensor.shape not in ([n], [n, 1]):
            errors.append(
                _error(
                    "shape", ["inputs", k, "shape"], f"shape must be [{n}] or [{n}, 1], one value per row", tensor.shape
                )
            )
        elif len(tensor.data) != n:
            errors.append(
                _error(
                    "data_length",
                    ["inputs", k, "data"],
                    f"{len(tensor.data)} values for shape {tensor.shape}",
                    len(tensor.data),
                )
            )
        if tensor.datatype.startswith("INT"):
            errors += [
                _error("int_type", ["inputs", k, "data", r], f"{tensor.datatype} values are integers", v)
                for r, v in enumerate(tensor.data)
                if v is not None and not float(v).is_integer()
            ]
    if n < 1:
        errors.append(_error("too_short", ["inputs", 0, "shape"], "batch is empty", request.inputs[0].shape))
    if errors:
        raise RequestValidationError(errors)
    position = {name: k for k, name in enumerate(names)}
    return _from_columns(
        {t.name: t.data for t in request.inputs},
        n,
        lambda name, row: ["inputs", position[name], "data", row],
        ["inputs"],
    )


def _duplicate_names(names: list[str], *loc: str) -> list[dict]:
    seen: set[str] = set()
    errors = []
    for k, name in enumerate(names):
        if name in seen:
            where = [loc[0], k, *loc[1:]]
            errors.append(_error("duplicate", where, f"{name} is given twice", name))
        seen.add(name)
    return errors


def _from_columns(columns: dict[str, list], n: int, cell_loc, names_loc: list[str]) -> Rows:
    """Rows from named columns of numbers or nulls (their types already checked by the models);
    ``cell_loc(name, row)`` and ``names_loc`` place an error in the body."""
    errors = []
    ids: list[int | None] = [None] * n
    if ENTITY_KEY in columns:
        ids = [None if v is None else int(v) for v in columns[ENTITY_KEY]]
        errors += [
            _error("entity_id", cell_loc(ENTITY_KEY, row), f"{ENTITY_KEY} is an integer in 0 … {MAX_ENTITY_ID}", v)
            for row, v in enumerate(columns[ENTITY_KEY])
            if v is None or not float(v).is_integer() or not 0 <= v <= MAX_ENTITY_ID
        ]
    elif absent := [name for name in FEATURE_NAMES if name not in columns]:
        errors += [_error("missing", names_loc, f"{name}: {MISSING_FEATURE_MESSAGE}", None) for name in absent]
    if errors:
        raise RequestValidationError(errors)
    matrix = np.full((n, N_FEATURES), np.nan, dtype=np.float64)
    given = np.zeros((n, N_FEATURES), dtype=bool)
    for column, name in enumerate(FEATURE_NAMES):
        if name in columns:
            matrix[:, column] = columns[name]  # None -> NaN
            given[:, column] = True
    return Rows(matrix.astype(FEATURE_DTYPE), given, ids)
