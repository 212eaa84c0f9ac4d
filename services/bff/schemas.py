"""Request and response bodies of the prediction API, generated from the feature contract."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from mlops_common.features import ENTITY_KEY, FEATURES

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


class _RequestBase(BaseModel):
    # Strict: "50000" or true is a type error, not a silent conversion; NaN/Infinity are refused.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [FEATURES_EXAMPLE, ENTITY_EXAMPLE, {**ENTITY_EXAMPLE, "AMT_CREDIT": 250000}]},
    )


PredictRequest = create_model(
    "PredictRequest",
    __base__=_RequestBase,
    __doc__=(
        f"Either all features, or {ENTITY_KEY} to read them from the online store; "
        "features given alongside an id override the stored values."
    ),
    **{ENTITY_KEY: (int | None, Field(None, ge=0, description="Applicant id; features come from the online store"))},
    **{f.name: (float | None, Field(None, description=f.description)) for f in FEATURES},
)


class Prediction(BaseModel):
    request_id: str = Field(description="Id of this prediction, also the key of its inference log record")
    probability: float = Field(description="Predicted probability of default")
    decision: Literal["approve", "reject"] = Field(description="reject when probability >= threshold")
    threshold: float
    model_name: str
    model_version: str = Field(description="Triton model version that answered (the MLflow version)")
    features_from_store: list[str] = Field(description="Features read from the online store, not the body")


class BatchPrediction(BaseModel):
    predictions: list[Prediction] = Field(description="One per input object, in input order")


class Readiness(BaseModel):
    ready: bool
    triton_model: bool
    online_store: bool
