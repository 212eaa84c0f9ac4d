"""The prediction BFF: validated requests -> online features -> one Triton call -> answer + log."""

import asyncio
import gc
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bff.auth import CallerDep, KeyGate, key_checked_route
from bff.bodies import NOT_UTF8, BatchTooLarge, Rows, feature_names_where, parse_batch, parse_single
from bff.docs import (
    OPENAPI_TAGS,
    PREDICT_BODY,
    add_offline_docs,
    api_description,
    batch_body,
    document_request_models,
    error_responses,
    prediction_operation,
)
from bff.errors import EntityNotFoundError
from bff.health import DependencyProbe
from bff.inference_log import InferenceLogPublisher
from bff.jobs import Jobs, jobs_router
from bff.limits import BodyLimitMiddleware
from bff.metrics import ROUTE_STATUSES, ROWS, PredictionTrafficMiddleware, RequestsInFlight
from bff.online_features import FeatureRows, OnlineFeatures, assemble
from bff.request_ids import RequestIdMiddleware, request_id_of
from bff.routing import Router, ShadowScored
from bff.schemas import (
    BATCH_EXAMPLES,
    LABELS_EXAMPLE,
    PREDICT_EXAMPLES,
    BatchPrediction,
    ErrorBody,
    LabelsRequest,
    LabelsWritten,
    Liveness,
    Prediction,
    Readiness,
    ValidationErrorBody,
)
from bff.settings import Settings
from bff.workers import retire_worker_metrics
from mlops_common.decisions import decide
from mlops_common.errors import DependencyUnavailableError, InferenceError
from mlops_common.feast_store import open_feature_store
from mlops_common.features import ENTITY_KEY
from mlops_common.ground_truth import write_labels
from mlops_common.inference_log_wire import log_block
from mlops_common.logging import configure_logging
from mlops_common.rollout import Role
from mlops_common.triton_client import TritonPredictor

log = logging.getLogger(__name__)
RETRY_AFTER = {"Retry-After": "1"}


class Platform:
    """Clients created once per process in the lifespan and shared by every request."""

    def __init__(
        self,
        settings: Settings,
        triton: TritonPredictor,
        router: Router,
        online: OnlineFeatures,
        logs: InferenceLogPublisher | None,
        dependencies: DependencyProbe,
    ):
        self.settings = settings
        self.triton = triton
        self.router = router
        self.online = online
        self.logs = logs
        self.dependencies = dependencies


# The dependencies are coroutines: FastAPI runs a plain function in its thread pool, a hop per request.
async def get_platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def _predict(platform: Platform, parsed: Rows, *, batch: bool, request_id: str) -> Response:
    """Score the rows; a single prediction's id is ``request_id``, a batch's rows are ``<request_id>-<i>``.
    The answer is built from the arrays and serialised by orjson: no model object per row."""
    started = time.perf_counter()
    budget = platform.settings.request_budget_s
    n = len(parsed)
    row_ids = [f"{request_id}-{i}" for i in range(n)] if batch else [request_id]
    try:
        # One budget for the whole dependency path: each call's own timeout can add up past it.
        async with asyncio.timeout(budget):
            rows = await assemble(parsed, platform.online)
            scored = await platform.router.score(rows.matrix, rows.entity_ids, row_ids, request_id)
    except TimeoutError as err:
        raise DependencyUnavailableError(
            f"online store + Triton took longer than {budget} s (REQUEST_BUDGET_S)"
        ) from err
    latency_ms = (time.perf_counter() - started) * 1000
    ROWS.inc(n)
    threshold = platform.settings.decision_threshold
    probabilities = scored.probabilities.tolist()
    decisions = decide(scored.probabilities, threshold).tolist()
    missing = feature_names_where(np.isnan(rows.matrix))
    model_name = platform.triton.model_name
    answers = answer_rows(
        row_ids,
        probabilities,
        decisions,
        threshold=threshold,
        model_name=model_name,
        versions=scored.versions,
        roles=scored.roles,
        from_store=rows.from_store,
        missing=missing,
    )
    logs = platform.logs
    if logs is not None:
        _log_inferences(
            logs,
            rows,
            request_ids=row_ids,
            probabilities=scored.probabilities,
            decisions=decisions,
            versions=scored.versions,
            roles=scored.roles,
            model_name=model_name,
            latency_ms=latency_ms,
        )

    def log_shadow(shadow: ShadowScored) -> None:
        """The challenger's answers for the same rows, logged as role shadow."""
        if logs is not None:
            _log_inferences(
                logs,
                rows,
                request_ids=shadow.request_ids,
                probabilities=shadow.probabilities,
                decisions=decide(shadow.probabilities, threshold).tolist(),
                versions=[shadow.version] * n,
                roles=[Role.SHADOW] * n,
                model_name=model_name,
                latency_ms=latency_ms,
            )

    platform.router.shadow(rows.matrix, scored.probabilities, row_ids, request_id, threshold, log_shadow)
    return Response(orjson.dumps({"predictions": answers} if batch else answers[0]), media_type="application/json")


def answer_rows(
    row_ids: list[str],
    probabilities: list[float],
    decisions: list[str],
    *,
    threshold: float,
    model_name: str,
    versions: list[str],
    roles: list[str],
    from_store: list[list[str]],
    missing: list[list[str]],
) -> list[dict[str, Any]]:
    """The answer's prediction objects from the rows' lists: plain dicts for orjson, no model object per row
    (``Prediction`` documents them)."""
    return [
        {
            "request_id": row_id,
            "probability": probability,
            "decision": decision,
            "threshold": threshold,
            "model_name": model_name,
            "model_version": version,
            "model_role": role,
            "features_from_store": stored,
            "missing_features": absent,
        }
        for row_id, probability, decision, version, role, stored, absent in zip(
            row_ids, probabilities, decisions, versions, roles, from_store, missing, strict=True
        )
    ]


def _log_inferences(
    logs: InferenceLogPublisher,
    rows: FeatureRows,
    *,
    request_ids: list[str],
    probabilities: np.ndarray,
    decisions: list[str],
    versions: list[str],
    roles: list[Role],
    model_name: str,
    latency_ms: float,
) -> None:
    """The rows' records as one block of columns: nothing per row, nothing encoded on the request path."""
    logs.submit_block(
        log_block(
            request_ids=request_ids,
            timestamp=datetime.now(UTC),
            entity_ids=rows.entity_ids,
            features=rows.matrix,
            store_features=rows.from_store,
            model_name=model_name,
            model_versions=versions,
            probabilities=probabilities,
            decisions=decisions,
            latency_ms=latency_ms,
            roles=roles,
        )
    )


def _json_safe(value):
    """Echoed inputs may hold NaN/Infinity, which JSON cannot carry: send them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _document_without_keys(app: FastAPI) -> None:
    """Keys off: the OpenAPI document asks for none (clients and fuzzers believe what it says)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
            schema.get("components", {}).pop("securitySchemes", None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def worker_app() -> FastAPI:
    """The app of one uvicorn worker process of ``python -m bff``, configured from the environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Prediction, labels and jobs routes: the caller is admitted (API key, rate limit) before the body is read.
    key_checked = key_checked_route(KeyGate(settings))
    api = APIRouter(route_class=key_checked)
    # Counted by the traffic middleware, read by the router's Triton batcher.
    in_flight = RequestsInFlight()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Only the registry is used: OnlineFeatures reads Redis itself (Feast's online client stays closed).
        store = open_feature_store(settings)
        triton = TritonPredictor(settings.triton_http_url, settings.triton_model_name, settings.triton_timeout_s)
        router = Router(
            triton,
            refresh_s=settings.routing_refresh_s,
            shadow_max_pending=settings.shadow_max_pending,
            max_rows=settings.max_batch_size,
            merge_min_in_flight=settings.triton_merge_min_in_flight,
            requests_in_flight=in_flight,
        )
        await router.start()
        logs = InferenceLogPublisher(settings) if settings.inference_logging_enabled else None
        if logs is not None:
            await logs.start()
        online = OnlineFeatures(store, settings.online_store_timeout_s, settings.feast_registry_refresh_s)
        await online.start()
        dependencies = DependencyProbe(triton, online, interval_s=settings.dependency_probe_interval_s)
        await dependencies.start()
        app.state.platform = Platform(settings, triton, router, online, logs, dependencies)
        app.state.jobs = Jobs(settings) if settings.jobs_database_url else None
        # What start-up allocated lives as long as the process: out of the collector's sight, so that
        # collections while serving walk only what requests allocate.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if app.state.jobs is not None:
                await app.state.jobs.close()
            await dependencies.close()
            await router.close()
            if logs is not None:
                await logs.close(settings.log_drain_timeout_s)
            await triton.close()
            await online.close()
            await store.close()
            retire_worker_metrics()

    app = FastAPI(
        title="Credit default prediction API",
        version="1.0",
        summary="Probability of default of a Home Credit applicant, from the champion model served by Triton.",
        description=api_description(settings),
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
        # Served by add_offline_docs below, from local files instead of FastAPI's CDN.
        docs_url=None,
        redoc_url=None,
        # Off in production if the API's description should not be public (API_DOCS_ENABLED=false).
        openapi_url="/openapi.json" if settings.api_docs_enabled else None,
    )
    # Added first, so it runs inside the traffic middleware: its 413s are counted and timed like any answer.
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, read_timeout_s=settings.body_read_timeout_s
    )
    app.add_middleware(PredictionTrafficMiddleware, max_in_flight=settings.max_in_flight, in_flight=in_flight)
    # Outermost: every answer of an API route, a 413 or an overload 503 too, carries the request id.
    app.add_middleware(RequestIdMiddleware, paths=frozenset(ROUTE_STATUSES))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _json_safe(jsonable_encoder(err.errors()))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        # FastAPI answers a body it cannot decode (not UTF-8) with a bare 400 (POST /labels, whose body
        # FastAPI reads); the prediction routes answer the same 422 from bff.bodies.
        if err.status_code == 400 and isinstance(err.__cause__, UnicodeDecodeError):
            return JSONResponse({"detail": [NOT_UTF8]}, status_code=422)
        return await http_exception_handler(request, err)

    @app.exception_handler(EntityNotFoundError)
    async def entity_not_found(_: Request, err: EntityNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(err), "SK_ID_CURR": err.entity_ids}, status_code=404)

    @app.exception_handler(DependencyUnavailableError)
    async def dependency_unavailable(_: Request, err: DependencyUnavailableError) -> JSONResponse:
        log.warning("dependency unavailable: %s", err)
        return JSONResponse({"detail": f"temporarily unavailable: {err}"}, status_code=503, headers=RETRY_AFTER)

    @app.exception_handler(InferenceError)
    async def inference_failed(_: Request, err: InferenceError) -> JSONResponse:
        log.error("inference failed (a bug or a broken model version; retrying cannot help): %s", err)
        return JSONResponse({"detail": f"inference failed: {err}"}, status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)

    # The prediction routes take the bare request: bff.bodies reads the body (FastAPI would build a pydantic
    # model per row), the middlewares and the route class have done the rest (request id, API key), and no
    # FastAPI dependency is resolved per request. Their OpenAPI operation is written out from the same models.
    @api.post(
        "/predict",
        response_model=Prediction,
        tags=["prediction"],
        summary="Score one applicant",
        description=(
            "Probability of default and decision for one applicant. The body is either all ten features, or "
            f"`{ENTITY_KEY}` to read them from the online store, with any features given alongside the id "
            "overriding the stored values. One online-store read (only when an id is given) and one Triton call."
        ),
        responses=error_responses(settings, 401, 404, 408, 413, 422, 429, 503),
        openapi_extra=prediction_operation(PREDICT_BODY, PREDICT_EXAMPLES),
    )
    async def predict(request: Request) -> Response:
        parsed = parse_single(await request.body())
        return await _predict(request.app.state.platform, parsed, batch=False, request_id=request_id_of(request))

    @api.post(
        "/predict/batch",
        response_model=BatchPrediction,
        tags=["prediction"],
        summary="Score a batch of applicants",
        description=(
            f"1 to {settings.max_batch_size} rows (`MAX_BATCH_SIZE`) in one of three forms: a JSON array of "
            '/predict bodies (either form, mixed as you like); pandas\' "split" orientation '
            '(`{"columns": [...], "data": [[...], ...]}`); or a KServe v2 / Open Inference Protocol inference '
            "request with one input per feature. The answer is the same for all three. The ids of the batch are "
            "read from the online store in one call and all rows go to Triton in one call; the predictions come "
            "back in input order. One invalid row fails the whole batch with 422, its position in `loc`."
        ),
        responses=error_responses(settings, 401, 404, 408, 413, 422, 429, 503),
        openapi_extra=prediction_operation(batch_body(settings), BATCH_EXAMPLES),
    )
    async def predict_batch(request: Request) -> Response:
        platform: Platform = request.app.state.platform
        limit = platform.settings.max_batch_size
        try:
            parsed = parse_batch(await request.body(), limit)
        except BatchTooLarge as err:
            return JSONResponse({"detail": f"batch of {err.rows} rows exceeds the maximum of {limit}"}, status_code=413)
        return await _predict(platform, parsed, batch=True, request_id=request_id_of(request))

    @api.post(
        "/labels",
        response_model=LabelsWritten,
        tags=["ground truth"],
        summary="Record observed outcomes",
        description=(
            "Observed outcomes of applicants (1: defaulted, 0: repaid), 1 to 10,000 per call, written in one commit "
            "to the ground-truth table beside the inference logs. One label per applicant: a label replaces the "
            "stored one only if it was observed at the same time or later, so sending a batch again changes nothing. "
            "An invalid label fails the whole call with 422, its index in `loc`."
        ),
        responses={
            **error_responses(settings, 401, 408),
            413: {"model": ErrorBody, "description": "A body over `MAX_BODY_BYTES`, refused before it is parsed"},
            422: {"model": ValidationErrorBody, "description": "Invalid body; every invalid field is listed"},
            **error_responses(settings, 429),
            503: {"model": ErrorBody, "description": "The ground-truth table (S3) is unavailable; retry later"},
        },
    )
    async def labels(
        body: Annotated[
            LabelsRequest, Body(openapi_examples={"one": {"summary": "One label", "value": LABELS_EXAMPLE}})
        ],
        platform: PlatformDep,
        _: CallerDep,
    ) -> LabelsWritten:
        try:
            counts = await asyncio.to_thread(
                write_labels, platform.settings, body.labels, timeout_s=platform.settings.labels_write_timeout_s
            )
        except Exception as err:  # S3 unreachable or refusing: the body was valid
            raise DependencyUnavailableError(f"ground-truth table: {type(err).__name__}: {err}"[:300]) from err
        return LabelsWritten(**counts)

    @app.get(
        "/health/live",
        response_model=Liveness,
        tags=["health"],
        summary="Liveness",
        description="The process answers HTTP (the liveness probe). Checks no dependency.",
    )
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/health/ready",
        response_model=Readiness,
        tags=["health"],
        summary="Readiness",
        description=(
            "The readiness probe: 503 until Triton has reported the model ready and the online store has "
            "answered, 200 from then on. A dependency that goes down later does not make the pod unready (one "
            "Triton restart would take every BFF pod out of its Service): predictions get fast 503s with "
            "`Retry-After`, and the body says which dependency answers now, as `bff_dependency_up` does."
        ),
        responses={503: {"model": Readiness, "description": "Triton or the online store has not answered yet"}},
    )
    async def ready(platform: PlatformDep):
        state = await platform.dependencies.check()
        return JSONResponse(state.model_dump(), status_code=200 if state.ready else 503)

    app.include_router(api)
    if settings.jobs_database_url:
        app.include_router(jobs_router(key_checked, settings.training_profiles_file))
    if settings.api_docs_enabled:
        document_request_models(app)
        if not settings.api_keys_required:
            _document_without_keys(app)
        add_offline_docs(app)  # last: the routes above are matched first
    return app
