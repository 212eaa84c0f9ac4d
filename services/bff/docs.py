"""API docs that work without internet: Swagger UI and ReDoc pages whose scripts, styles and icon the
API serves itself, from the files that the ``fastapi-offline`` package ships (Swagger UI 5, which
FastAPI's OpenAPI 3.1 needs, and ReDoc 2). FastAPI's own pages load them from a CDN."""

import json
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic.json_schema import models_json_schema

from bff.auth import KEY_SECURITY
from bff.metrics import OVERLOADED_BODY
from bff.request_ids import REQUEST_ID_PARAMETER
from bff.schemas import (
    EntityNotFoundBody,
    ErrorBody,
    InferenceRequest,
    PredictRequest,
    SplitBatch,
    ValidationErrorBody,
)
from bff.settings import Settings
from mlops_common.features import ENTITY_KEY, FEATURES, N_FEATURES

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs-assets"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
# No call to validator.swagger.io (the page must not reach out); the rest are FastAPI's defaults.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "tryItOutEnabled": True, "displayRequestDuration": True}


# The prediction bodies are read by bff.bodies, not by FastAPI: their schemas are added to the document here.
_REQUEST_MODELS = (PredictRequest, SplitBatch, InferenceRequest)
_REF = "#/components/schemas/{model}"


def _ref(model: type) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


PREDICT_BODY = _ref(PredictRequest)


def batch_body(settings: Settings) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "array", "items": PREDICT_BODY, "minItems": 1, "maxItems": settings.max_batch_size},
            _ref(SplitBatch),
            _ref(InferenceRequest),
        ]
    }


def prediction_operation(schema: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    """A prediction route's ``openapi_extra``: its JSON request body, the X-Request-ID header and the key
    schemes (``bff.auth``; removed from the document where keys are off)."""
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema, "examples": examples}}},
        "parameters": [REQUEST_ID_PARAMETER],
        "security": KEY_SECURITY,
    }


def document_request_models(app: FastAPI) -> None:
    """Add the schemas of the bodies bff.bodies reads to the OpenAPI document's components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        if PredictRequest.__name__ not in schemas:
            _, definitions = models_json_schema([(m, "validation") for m in _REQUEST_MODELS], ref_template=_REF)
            schemas.update(definitions["$defs"])
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_offline_docs(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets. Call after the API's routes: routes match in order, so the
    prediction routes are tried first and these add nothing to a prediction request."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with docs_url=None, redoc_url=None (FastAPI's pages use a CDN)")
    openapi_url = app.openapi_url
    oauth2_redirect_url = f"{DOCS_URL}/oauth2-redirect"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")


# -- what the OpenAPI says about the API as a whole and about its errors --------------------------
OPENAPI_TAGS = [
    {"name": "prediction", "description": "Probability of default and approve/reject decision"},
    {"name": "ground truth", "description": "Observed outcomes, joined to the predictions by the quality monitor"},
    {"name": "jobs", "description": "Batch scoring and training runs on request (where jobs are configured)"},
    {"name": "health", "description": "Kubernetes probes"},
]


def api_description(settings: Settings) -> str:
    """The OpenAPI description: what the API predicts, its two request forms, the feature contract."""
    features = "\n".join(f"| `{f.name}` | {f.group} | {f.description} |" for f in FEATURES)
    return f"""\
Predicts the probability that a Home Credit applicant defaults on a loan, with the model that holds the
`champion` alias in the MLflow registry, served by Triton; the answer carries the probability, the decision
(`reject` when the probability is at least the threshold, {settings.decision_threshold} here, else `approve`), and
the model name and version that answered. Every prediction is written to the inference log under its `request_id`.

## Two request forms

* **Features in the body**: all {N_FEATURES} features of the contract below, as JSON numbers.
* **An applicant id**: `{ENTITY_KEY}`; the features are read from the Feast online store, the values the
  feature pipeline computed for that applicant. Features given alongside the id override the stored ones;
  `features_from_store` in the answer names the features that came from the store. An id the store does
  not know gets 404.

`POST /predict` takes one body. `POST /predict/batch` takes up to {settings.max_batch_size} rows, answered in input
order, in one of three forms:

* a JSON array of `/predict` bodies, of either form, mixed;
* pandas' "split" orientation, `{{"columns": [...], "data": [[...], ...]}}` (`DataFrame.to_json(orient="split")`);
* a KServe v2 / Open Inference Protocol inference request, one input per feature
  (`{{"inputs": [{{"name": "AMT_CREDIT", "shape": [n], "datatype": "FP64", "data": [...]}}, ...]}}`).

In the two columnar forms an `{ENTITY_KEY}` column (input) gives every row an applicant id; the features that
are not among the columns then come from the online store. The columnar forms are the cheapest to send
and to read.

## Missing values

The model was trained with missing values (an applicant without an annuity, or without credit-bureau
history) and handles them natively. A feature sent as `null` is **unknown**: the model sees it as missing,
exactly as in training, and so does a feature the online store has no value for. A feature left **out** of
a body without `{ENTITY_KEY}` is an error (422, type `missing`), so that a typo never becomes a silently
missing value. `missing_features` in the answer names the features the model saw as missing.

## Feature contract

The model's inputs, in the order of the tensor sent to Triton (float32). The same definition
(`services/mlops_common/features.py`) generates the Feast schemas, the training matrix, the Triton configs
and this request model.

| feature | group | description |
|---|---|---|
{features}

Bodies are strict: numbers must be JSON numbers (not strings or booleans) within float32's range (the
model's input type); `NaN`, `Infinity` and unknown fields are refused. `null` or an absent feature means
"not given" (read from the store when an id is given).

## Errors

| status | when | body |
|---|---|---|
| 404 | an `{ENTITY_KEY}` not in the online store | `detail` and the ids |
| 413 | a batch over {settings.max_batch_size} rows | `detail` |
| 422 | invalid body: every bad field with its path (`loc`) | `detail`: list of field errors |
| 503 | Triton or the online store down or slower than its timeout, or over {settings.max_in_flight} requests \
in flight; `Retry-After` says when to retry | `detail` |
"""


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}


def error_responses(settings: Settings, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a prediction route: the body model, a description and examples per status."""
    too_many = settings.max_batch_size + 1
    catalogue: dict[int, dict[str, Any]] = {
        401: {
            "model": ErrorBody,
            "description": "No API key, or one that is unknown or revoked (only where the deployment requires "
            "keys: `API_KEYS_REQUIRED`)",
            "headers": {"WWW-Authenticate": {"description": "How to authenticate", "schema": {"type": "string"}}},
            "examples": {
                "missing_key": {
                    "summary": "No key",
                    "value": {"detail": "an API key is required: Authorization: Bearer <key> or X-API-Key"},
                }
            },
        },
        404: {
            "model": EntityNotFoundBody,
            "description": f"An `{ENTITY_KEY}` the online store does not know",
            "examples": {
                "unknown_applicant": {
                    "summary": "Unknown applicant id",
                    "value": {"detail": f"{ENTITY_KEY} 999999 not found in the online store", ENTITY_KEY: [999999]},
                }
            },
        },
        408: {
            "model": ErrorBody,
            "description": f"The body did not arrive within {settings.body_read_timeout_s:g} s "
            "(`BODY_READ_TIMEOUT_S`): a slow client does not hold a slot of the server",
            "examples": {
                "slow_body": {
                    "summary": "Body too slow",
                    "value": {
                        "detail": f"request body not received within {settings.body_read_timeout_s:g} s "
                        "(BODY_READ_TIMEOUT_S)"
                    },
                }
            },
        },
        413: {
            "model": ErrorBody,
            "description": f"A body over {settings.max_body_bytes} bytes (`MAX_BODY_BYTES`, refused before it is "
            f"parsed), or a batch of more than {settings.max_batch_size} rows (`MAX_BATCH_SIZE`)",
            "examples": {
                "batch_too_large": {
                    "summary": "Too many rows",
                    "value": {"detail": f"batch of {too_many} rows exceeds the maximum of {settings.max_batch_size}"},
                },
                "body_too_large": {
                    "summary": "Too many bytes",
                    "value": {
                        "detail": f"request body of {settings.max_body_bytes + 1} bytes exceeds the limit of "
                        f"{settings.max_body_bytes} bytes (MAX_BODY_BYTES)"
                    },
                },
            },
        },
        422: {
            "model": ValidationErrorBody,
            "description": "Invalid body: wrong types, features left out without an id (type `missing`; "
            "send null for an unknown value), unknown fields, NaN, malformed JSON, an empty batch. Every "
            "invalid field is listed; in a batch `loc` holds the row index",
            "examples": {
                "wrong_type": {
                    "summary": "A number sent as a string",
                    "value": {
                        "detail": [
                            {
                                "type": "float_type",
                                "loc": ["body", "AMT_CREDIT"],
                                "msg": "Input should be a valid number",
                                "input": "200000",
                            }
                        ]
                    },
                },
                "unknown_field": {
                    "summary": "An unknown field (a typo)",
                    "value": {
                        "detail": [
                            {
                                "type": "extra_forbidden",
                                "loc": ["body", "AMT_CREDITT"],
                                "msg": "Extra inputs are not permitted",
                                "input": 250000,
                            }
                        ]
                    },
                },
                "constraint": {
                    "summary": "A negative applicant id",
                    "value": {
                        "detail": [
                            {
                                "type": "greater_than_equal",
                                "loc": ["body", ENTITY_KEY],
                                "msg": "Input should be greater than or equal to 0",
                                "input": -1,
                                "ctx": {"ge": 0},
                            }
                        ]
                    },
                },
            },
        },
        429: {
            "model": ErrorBody,
            "description": "The API key's rate limit is spent (`API_KEY_RATE_LIMIT_PER_S` per key, only where "
            "the deployment sets one); retry after `Retry-After` seconds",
            "headers": _RETRY_AFTER,
            "examples": {
                "rate_limited": {
                    "summary": "Too many requests for this key",
                    "value": {
                        "detail": "rate limit of key 'partner-a' exceeded: 20 requests/s (API_KEY_RATE_LIMIT_PER_S)"
                    },
                }
            },
        },
        503: {
            "model": ErrorBody,
            "description": "Triton or the online store unavailable or slower than its timeout, or too many "
            "requests in flight; retry after `Retry-After` seconds",
            "headers": _RETRY_AFTER,
            "examples": {
                "triton_unavailable": {
                    "summary": "Triton did not answer in time",
                    "value": {"detail": "temporarily unavailable: triton: Deadline Exceeded"},
                },
                "online_store_unavailable": {
                    "summary": "The online store did not answer in time",
                    "value": {"detail": "temporarily unavailable: online store: TimeoutError: "},
                },
                "overloaded": {
                    "summary": f"Over MAX_IN_FLIGHT ({settings.max_in_flight}) requests in flight",
                    "value": json.loads(OVERLOADED_BODY),
                },
            },
        },
    }
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry = dict(catalogue[status])
        examples = entry.pop("examples")
        responses[status] = {**entry, "content": {"application/json": {"examples": examples}}}
    return responses
