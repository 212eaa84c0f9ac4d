"""Prometheus metrics of the BFF, and the ASGI middleware that records them and sheds load."""

import time

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from mlops_common.metrics import observe_all, service_registry
from mlops_common.rollout import Role, Routing

REGISTRY = service_registry()
# The label is `route`, not `endpoint`: the Prometheus Operator sets `endpoint` (the port name) on
# every target and would overwrite it.
REQUESTS = Counter("bff_requests", "Prediction API requests", ["route", "status"], registry=REGISTRY)
DURATION = Histogram(
    "bff_request_duration_seconds",
    "Prediction API latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
ROWS = Counter("bff_rows_predicted", "Rows scored by the model", registry=REGISTRY)
# Gauges say how the workers' values add up (bff.workers): in flight requests of the live workers sum up.
IN_FLIGHT = Gauge(
    "bff_in_flight_requests", "Prediction requests being processed", multiprocess_mode="livesum", registry=REGISTRY
)
# 1 while the dependency answers (Triton reports the model ready, the online store a ping); every
# worker checks on its own, and the lowest shows a worker that cannot reach it.
DEPENDENCY_UP = Gauge(
    "bff_dependency_up",
    "Whether a dependency of the BFF answers its check (DEPENDENCY_PROBE_INTERVAL_S)",
    ["dependency"],
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
DEPENDENCIES = ("triton_model", "online_store")
for _dependency in DEPENDENCIES:
    DEPENDENCY_UP.labels(_dependency)

# The statuses each API route answers with: its documented responses, and 500 for a bug.
ROUTE_STATUSES = {
    "/predict": ("200", "401", "404", "408", "413", "422", "429", "500", "503"),
    "/predict/batch": ("200", "401", "404", "408", "413", "422", "429", "500", "503"),
    "/labels": ("200", "401", "408", "413", "422", "429", "500", "503"),
}
# Every series exists from start-up, at 0: rate() and increase() only see a change from a sample
# that exists, so a first 5xx on a series created by that very request would alert nobody.
for _route, _statuses in ROUTE_STATUSES.items():
    DURATION.labels(_route)
    for _status in _statuses:
        REQUESTS.labels(_route, _status)

# By the key's name (API_KEYS), never the key; created at 0 for every configured name by create_app.
API_KEY_REQUESTS = Counter(
    "bff_api_key_requests", "Requests authenticated with an API key, by key name", ["key_name"], registry=REGISTRY
)
API_KEY_RATE_LIMITED = Counter(
    "bff_api_key_rate_limited",
    "Requests refused with 429: the key's API_KEY_RATE_LIMIT_PER_S was spent",
    ["key_name"],
    registry=REGISTRY,
)

# Per model version and role (champion, canary, shadow; mlops_common.rollout): what a rollout's analysis
# compares. The series of the routed versions exist from the moment the routing names them.
CALL_OUTCOMES = ("ok", "error")
MODEL_CALLS = Counter(
    "bff_model_calls",
    "Model calls of predictions per version and role (concurrent ones share a Triton request); error: failed, "
    "or answered a probability outside [0, 1]",
    ["version", "role", "outcome"],
    registry=REGISTRY,
)
# Concurrent calls of one version share a Triton request (bff.batching): rows per request show how much.
TRITON_REQUEST_ROWS = Histogram(
    "bff_triton_request_rows",
    "Rows per request to Triton (the calls of concurrent predictions merged: TRITON_MERGE_MIN_IN_FLIGHT)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
MODEL_ROWS = Counter("bff_model_rows", "Rows scored per model version and role", ["version", "role"], registry=REGISTRY)
MODEL_LATENCY = Histogram(
    "bff_model_latency_seconds",
    "Triton call latency per model version and role",
    ["version", "role"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
MODEL_SCORES = Histogram(
    "bff_model_score",
    "Predicted probabilities of default per model version and role",
    ["version", "role"],
    buckets=tuple(round(0.05 * i, 2) for i in range(1, 21)),
    registry=REGISTRY,
)
SHADOW_OUTCOMES = ("agree", "disagree")
SHADOW_COMPARISONS = Counter(
    "bff_shadow_comparisons",
    "Rows scored by both champion and shadow challenger: same decision (agree) or not",
    ["outcome"],
    registry=REGISTRY,
)
SHADOW_DIFFERENCE = Histogram(
    "bff_shadow_score_difference",
    "Absolute difference of the challenger's and the champion's probability on the same row",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0),
    registry=REGISTRY,
)
SHADOW_SKIPPED = Counter(
    "bff_shadow_skipped", "Requests not shadowed: ROLLOUT_SHADOW_MAX_PENDING calls were under way", registry=REGISTRY
)
CANARY_PERCENT = Gauge(
    "bff_routing_canary_percent",
    "Share of applicants the challenger answers (0 outside canary mode)",
    # Every worker reads the same routing; the highest shows a change as soon as one worker has it.
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
for _outcome in SHADOW_OUTCOMES:
    SHADOW_COMPARISONS.labels(_outcome)


def _series(routing: Routing | None) -> set[tuple[str, str]]:
    if routing is None:
        return set()
    series = {(routing.champion, Role.CHAMPION.value)}
    if routing.challenger:
        series |= {(routing.challenger, Role.CANARY.value), (routing.challenger, Role.SHADOW.value)}
    return series


def track_routing(old: Routing | None, new: Routing | None) -> None:
    """Create the new routing's series at 0, and drop those of versions no longer routed (from this
    process; under ``python -m bff`` the workers' metric files keep them, unchanging, until restart)."""
    for version, role in _series(old) - _series(new):
        for metric in (MODEL_ROWS, MODEL_LATENCY, MODEL_SCORES):
            metric.remove(version, role)
        for outcome in CALL_OUTCOMES:
            MODEL_CALLS.remove(version, role, outcome)
    for version, role in _series(new):
        for metric in (MODEL_ROWS, MODEL_LATENCY, MODEL_SCORES):
            metric.labels(version, role)
        for outcome in CALL_OUTCOMES:
            MODEL_CALLS.labels(version, role, outcome)
    canary = new is not None and new.mode.value == "canary"
    CANARY_PERCENT.set(new.policy.canary_percent if canary else 0)


def observe_call(version: str, role: Role, seconds: float, probabilities: np.ndarray | None) -> None:
    """One Triton call; ``probabilities`` None when it failed."""
    role_name = role.value
    if probabilities is None:
        MODEL_CALLS.labels(version, role_name, "error").inc()
        return
    MODEL_CALLS.labels(version, role_name, "ok").inc()
    MODEL_ROWS.labels(version, role_name).inc(len(probabilities))
    MODEL_LATENCY.labels(version, role_name).observe(seconds)
    observe_all(MODEL_SCORES.labels(version, role_name), probabilities)


def observe_shadow(champion: np.ndarray, challenger: np.ndarray, threshold: float) -> None:
    """The same rows scored by the champion (answered) and the shadow challenger."""
    agree = int(np.count_nonzero((champion >= threshold) == (challenger >= threshold)))
    SHADOW_COMPARISONS.labels("agree").inc(agree)
    SHADOW_COMPARISONS.labels("disagree").inc(len(champion) - agree)
    observe_all(SHADOW_DIFFERENCE, np.abs(challenger - champion))


OVERLOADED_BODY = b'{"detail":"overloaded: too many requests in flight, retry shortly"}'


class RequestsInFlight:
    """The prediction requests this worker is processing: counted by PredictionTrafficMiddleware, read by
    the Triton batcher (bff.batching), which merges calls only while the worker is that busy."""

    def __init__(self) -> None:
        self.count = 0


class PredictionTrafficMiddleware:
    """Counts and times prediction requests, and answers 503 + Retry-After past ``max_in_flight``.

    Refusing at the door keeps latency bounded for the requests already admitted instead of
    letting a queue build up behind a saturated Triton. Plain ASGI: no per-request task overhead.
    """

    def __init__(self, app, max_in_flight: int, in_flight: RequestsInFlight):
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = in_flight

    async def __call__(self, scope, receive, send):
        path = scope.get("path")
        if scope["type"] != "http" or path not in ROUTE_STATUSES:
            await self.app(scope, receive, send)
            return
        if self.in_flight.count >= self.max_in_flight:
            REQUESTS.labels(path, "503").inc()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
                }
            )
            await send({"type": "http.response.body", "body": OVERLOADED_BODY})
            return
        status = "500"

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        self.in_flight.count += 1
        IN_FLIGHT.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.in_flight.count -= 1
            IN_FLIGHT.dec()
            DURATION.labels(path).observe(time.perf_counter() - started)
            REQUESTS.labels(path, status).inc()
