"""Prometheus metrics of the BFF, and the ASGI middleware that records them and sheds load."""

import time

from prometheus_client import Counter, Gauge, Histogram

from mlops_common.metrics import service_registry

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
IN_FLIGHT = Gauge("bff_in_flight_requests", "Prediction requests being processed", registry=REGISTRY)

# The statuses each API route answers with: its documented responses, and 500 for a bug.
ROUTE_STATUSES = {
    "/predict": ("200", "401", "404", "413", "422", "500", "503"),
    "/predict/batch": ("200", "401", "404", "413", "422", "500", "503"),
    "/labels": ("200", "401", "413", "422", "500", "503"),
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

OVERLOADED_BODY = b'{"detail":"overloaded: too many requests in flight, retry shortly"}'


class PredictionTrafficMiddleware:
    """Counts and times prediction requests, and answers 503 + Retry-After past ``max_in_flight``.

    Refusing at the door keeps latency bounded for the requests already admitted instead of
    letting a queue build up behind a saturated Triton. Plain ASGI: no per-request task overhead.
    """

    def __init__(self, app, max_in_flight: int):
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        path = scope.get("path")
        if scope["type"] != "http" or path not in ROUTE_STATUSES:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
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

        self.in_flight += 1
        IN_FLIGHT.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.in_flight -= 1
            IN_FLIGHT.dec()
            DURATION.labels(path).observe(time.perf_counter() - started)
            REQUESTS.labels(path, status).inc()
