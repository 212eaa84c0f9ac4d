"""Request and response bodies of the prediction API, generated from the feature contract."""

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from mlops_common.features import ENTITY_KEY, FEATURES, MAX_ENTITY_ID
from mlops_common.ground_truth import MAX_LABELS_PER_WRITE, Label

# The documented request body: every feature given by the caller.
FEATURES_EXAMPLE = {
    "AMT_INCOME_TOTAL": 50000,
    "AMT_CREDIT": 200000,
    "AMT_ANNUITY": 15000,
    "DAYS_BIRTH": -12000,
    "DAYS_EMPLOYED": -2000,
    "bureau_credit_count": 3,
    "bureau_credit_active_count": 1,
    "bureau_credit_days_enddate_mean": -500,
    "bureau_amt_credit_sum": 300000,
    "bureau_amt_credit_sum_overdue": 0,
}
ENTITY_EXAMPLE = {ENTITY_KEY: 100002}
# An applicant id with some fields given: they override the stored values (a what-if on the loan terms).
OVERRIDE_EXAMPLE = {**ENTITY_EXAMPLE, "AMT_CREDIT": 250000, "AMT_ANNUITY": 18000}

# Named request examples of the OpenAPI (Swagger UI's example picker); tests/bff/test_api_docs.py
# posts every one of them and expects 200, so they cannot drift from what the API accepts.
PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "features": {
        "summary": "All ten features in the body",
        "description": "Nothing is read from the online store; `features_from_store` is empty in the answer.",
        "value": FEATURES_EXAMPLE,
    },
    "applicant_id": {
        "summary": f"An applicant id ({ENTITY_KEY}): features from the online store",
        "description": "Every feature is read from the Feast online store; an id it does not know gets 404.",
        "value": ENTITY_EXAMPLE,
    },
    "applicant_id_with_overrides": {
        "summary": "An applicant id, with fields overriding the stored values",
        "description": (
            "The stored features of the applicant, except the ones in the body: here a what-if on the credit "
            "amount and annuity. `features_from_store` lists the eight that came from the store."
        ),
        "value": OVERRIDE_EXAMPLE,
    },
}


def _integral_number_to_int(value: Any) -> Any:
    """JSON has one number type: 100002.0 is the integer 100002 (as JSON Schema's "integer" says)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The model's inputs are float32: a number past float32's range would reach it as infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)
FeatureValue = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]

# Strict otherwise: "100002" (a string) and true stay type errors. Bounded (MAX_ENTITY_ID): a larger id is
# a 422, not a 500 from the online store's encoder.
ApplicantId = Annotated[int, Field(ge=0, le=MAX_ENTITY_ID), BeforeValidator(_integral_number_to_int)]


class _RequestBase(BaseModel):
    # Strict: "50000" or true is a type error, not a silent conversion; NaN/Infinity are refused.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [FEATURES_EXAMPLE, ENTITY_EXAMPLE, {**ENTITY_EXAMPLE, "AMT_CREDIT": 250000}],
            # The rule the handler enforces, stated in the schema so that clients and fuzzers know it:
            # an applicant id, or every feature (each a number, or null when unknown).
            "anyOf": [
                {"required": [ENTITY_KEY], "properties": {ENTITY_KEY: {"type": "integer"}}},
                {"required": [f.name for f in FEATURES]},
            ],
        },
    )


PredictRequest = create_model(
    "PredictRequest",
    __base__=_RequestBase,
    __doc__=(
        f"Either all features, or {ENTITY_KEY} to read them from the online store; "
        "features given alongside an id override the stored values."
    ),
    **{ENTITY_KEY: (ApplicantId | None, Field(None, description="Applicant id; features come from the online store"))},
    **{f.name: (FeatureValue | None, Field(None, description=f.description)) for f in FEATURES},
)


# The names a columnar batch may use: the features, and the applicant id.
ColumnName = Literal[(*(f.name for f in FEATURES), ENTITY_KEY)]  # type: ignore[valid-type]
_COLUMN_NAMES = [f.name for f in FEATURES]
SPLIT_EXAMPLE = {
    "columns": _COLUMN_NAMES,
    "data": [
        [FEATURES_EXAMPLE[name] for name in _COLUMN_NAMES],
        [FEATURES_EXAMPLE[name] if name != "AMT_ANNUITY" else None for name in _COLUMN_NAMES],
    ],
}
V2_EXAMPLE = {
    "inputs": [
        {"name": ENTITY_KEY, "shape": [2], "datatype": "INT64", "data": [100002, 100002]},
        {"name": "AMT_CREDIT", "shape": [2], "datatype": "FP64", "data": [250000, 300000]},
    ]
}


class SplitBatch(BaseModel):
    """A batch in pandas' "split" orientation (`DataFrame.to_json(orient="split")` without the index):
    the column names once, then one array of values per row, in the columns' order. Columns are features
    and optionally SK_ID_CURR (then every row has an id, and the features not among the columns come from
    the online store); without SK_ID_CURR every feature is a column. null is an unknown value."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    columns: list[ColumnName] = Field(min_length=1, description="Feature names, and optionally SK_ID_CURR")
    data: list[list[FeatureValue | None]] = Field(min_length=1, description="One array per row, in `columns` order")
    index: list[Any] | None = Field(None, description="Ignored (pandas writes the row labels here)")


class InferInput(BaseModel):
    """One input tensor of the Open Inference Protocol: here one per feature (or SK_ID_CURR), a value per row."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: ColumnName = Field(description="A feature name, or SK_ID_CURR")
    shape: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        min_length=1, max_length=2, description="[rows] or [rows, 1]"
    )
    datatype: Literal["FP32", "FP64", "INT32", "INT64"] = Field(description="SK_ID_CURR: INT64 or INT32")
    data: list[FeatureValue | None] = Field(description="The values, row-major; null is an unknown value")
    parameters: dict[str, Any] | None = Field(None, description="Ignored")


class InferenceRequest(BaseModel):
    """A batch as a KServe v2 / Open Inference Protocol JSON inference request: one input per feature, as
    MLServer's and KServe's pandas codecs send a table. With an SK_ID_CURR input the features not among the
    inputs come from the online store; without it every feature is an input."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(None, description="Ignored: use the X-Request-ID header")
    parameters: dict[str, Any] | None = Field(None, description="Ignored")
    inputs: list[InferInput] = Field(min_length=1, max_length=len(FEATURES) + 1)


BATCH_EXAMPLES: dict[str, dict[str, Any]] = {
    "mixed": {
        "summary": "A list of objects, mixing both forms",
        "description": (
            "Rows with all features, an applicant id, and an id with overrides. The ids are read from the "
            "online store in one call, all rows go to Triton in one call, and the answers come in input order."
        ),
        "value": [FEATURES_EXAMPLE, ENTITY_EXAMPLE, OVERRIDE_EXAMPLE],
    },
    "split": {
        "summary": 'Columns and rows (pandas "split")',
        "description": "Every feature a column; the second row's annuity is unknown (null).",
        "value": SPLIT_EXAMPLE,
    },
    "kserve_v2": {
        "summary": "KServe v2 / Open Inference Protocol inputs",
        "description": "One applicant from the online store, scored with two credit amounts (a what-if).",
        "value": V2_EXAMPLE,
    },
}


class Prediction(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "3f0c9a4e5b7d4c1e8a2f6b9d0e1c2a3b",
                    "probability": 0.0412,
                    "decision": "approve",
                    "threshold": 0.5,
                    "model_name": "credit_default",
                    "model_version": "1",
                    "model_role": "champion",
                    "features_from_store": [],
                    "missing_features": [],
                }
            ]
        }
    )

    request_id: str = Field(description="Id of this prediction, also the key of its inference log record")
    probability: float = Field(description="Predicted probability of default")
    decision: Literal["approve", "reject"] = Field(description="reject when probability >= threshold")
    threshold: float = Field(description="Decision threshold of this deployment (DECISION_THRESHOLD)")
    model_name: str = Field(description="Triton model that answered")
    model_version: str = Field(description="Triton model version that answered (the MLflow version)")
    model_role: Literal["champion", "canary"] = Field(
        description="champion: the champion answered; canary: the challenger answered (a canary rollout's share)"
    )
    features_from_store: list[str] = Field(description="Features read from the online store, not the body")
    missing_features: list[str] = Field(
        description="Features the model saw as missing (NaN): null in the body, or no value in the online store"
    )


class BatchPrediction(BaseModel):
    predictions: list[Prediction] = Field(description="One per input object, in input order")


class Liveness(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    ready: bool = Field(
        description="Both dependencies have answered since the process started; it then stays true while one "
        "is down (predictions get fast 503s)"
    )
    triton_model: bool = Field(description="Triton reports the model ready now")
    online_store: bool = Field(description="The online store answers a ping now")


class LabelsRequest(BaseModel):
    """Observed outcomes (ground truth) for the quality monitor; one commit to the ground-truth table."""

    model_config = ConfigDict(extra="forbid")

    labels: list[Label] = Field(min_length=1, max_length=MAX_LABELS_PER_WRITE)


LABELS_EXAMPLE = {"labels": [{"applicant_id": 100002, "outcome": 1, "observed_at": "2026-11-01T00:00:00Z"}]}


class LabelsWritten(BaseModel):
    inserted: int = Field(description="Applicants the table had no label for")
    updated: int = Field(description="Labels replaced by one observed at the same time or later")
    unchanged: int = Field(description="Labels kept because the stored one was observed later")


# -- error bodies: the exact shapes the app's handlers (bff.app) and load shedding (bff.metrics) send --
class ErrorBody(BaseModel):
    """413, 503 (and 500): a message."""

    model_config = ConfigDict(extra="forbid")

    detail: str = Field(description="What went wrong, in words")


class EntityNotFoundBody(BaseModel):
    """404: applicant ids the online store does not know."""

    model_config = ConfigDict(extra="forbid")

    detail: str = Field(description="The ids not found, in words")
    SK_ID_CURR: list[int] = Field(description="The ids not found")


class FieldError(BaseModel):
    """One invalid field: pydantic's error, as FastAPI reports it."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Error type, e.g. float_type, missing, extra_forbidden, finite_number")
    loc: list[str | int] = Field(description='Path of the field: ["body", name], or ["body", row, name] in a batch')
    msg: str = Field(description="The error in words")
    input: Any = Field(description="The value given (NaN/Infinity as strings)")
    ctx: dict[str, Any] | None = Field(None, description="The violated constraint, for some types (e.g. {ge: 0})")


class ValidationErrorBody(BaseModel):
    """422: every invalid field of the body at once."""

    model_config = ConfigDict(extra="forbid")

    detail: list[FieldError]
