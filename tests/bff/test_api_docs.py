"""The API documents itself and its docs work offline.

* /docs (Swagger UI) and /redoc load every script, style and icon from the app itself: no URL to
  another host, each asset answers 200 with its real content. (FastAPI's own pages use a CDN and are
  blank without internet.)
* /openapi.json describes every operation, has examples of every request form and the schema of every
  error body; the documented request examples are accepted by the app (200), the documented error
  examples match their schemas, and the errors the app really sends match the documented schemas.

In-process (ASGI, no lifespan): Triton and the online store are fakes behind the app's platform dependency.
"""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np
import pytest
from pydantic import BaseModel

from bff.app import Platform, create_app
from bff.errors import EntityNotFoundError
from bff.health import DependencyProbe
from bff.metrics import RequestsInFlight
from bff.routing import Router
from bff.schemas import (
    FEATURES_EXAMPLE,
    BatchPrediction,
    EntityNotFoundBody,
    ErrorBody,
    Prediction,
    ValidationErrorBody,
)
from bff.settings import Settings
from mlops_common.errors import DependencyUnavailableError
from mlops_common.features import ENTITY_KEY, FEATURE_NAMES

BASE_URL = "http://bff"
KNOWN_APPLICANT = 100002
PREDICTION_STATUSES = (401, 404, 408, 413, 422, 429, 503)
PREDICTION_ROUTES = {"/predict": PREDICTION_STATUSES, "/predict/batch": PREDICTION_STATUSES}
ERROR_MODELS: dict[int, type[BaseModel]] = {
    401: ErrorBody,
    404: EntityNotFoundBody,
    408: ErrorBody,
    413: ErrorBody,
    422: ValidationErrorBody,
    429: ErrorBody,
    503: ErrorBody,
}


# -- fakes of Triton and the online store ----------------------------------------------------------
class FakeTriton:
    model_name = "credit_default"

    def __init__(self) -> None:
        self.matrices: list[np.ndarray] = []
        self.request_ids: list[str] = []
        self.failure: Exception | None = None
        self.gate: asyncio.Event | None = None  # when set, predict waits for it
        self.entered = asyncio.Event()

    async def predict(self, features: np.ndarray, *, version: str = "", request_id: str = "") -> tuple[np.ndarray, str]:
        self.request_ids.append(request_id)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        self.matrices.append(features.copy())
        return np.full(len(features), 0.25, dtype=np.float32), "7"

    async def model_ready(self) -> bool:
        return True


class FakeOnlineStore:
    """Knows one applicant; like the real one, an unknown id is EntityNotFoundError."""

    rows = {KNOWN_APPLICANT: {**FEATURES_EXAMPLE, "AMT_CREDIT": 123456.0}}

    async def fetch(self, entity_ids: list[int]) -> dict[int, dict]:
        missing = [i for i in dict.fromkeys(entity_ids) if i not in self.rows]
        if missing:
            raise EntityNotFoundError(missing)
        return {i: self.rows[i] for i in entity_ids}

    async def ping(self) -> bool:
        return True


class Fakes:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.triton = FakeTriton()
        self.app = create_app(settings)
        router = Router(
            self.triton,
            refresh_s=1.0,
            shadow_max_pending=4,
            max_rows=256,
            merge_min_in_flight=0,
            requests_in_flight=RequestsInFlight(),
        )  # type: ignore[arg-type]
        online = FakeOnlineStore()
        dependencies = DependencyProbe(self.triton, online, interval_s=1.0)  # type: ignore[arg-type]
        platform = Platform(settings, self.triton, router, online, None, dependencies)  # type: ignore[arg-type]
        self.app.state.platform = platform  # what the lifespan sets in the service

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL)


@pytest.fixture
def fakes() -> Fakes:
    return Fakes(Settings(max_batch_size=3, max_in_flight=1))


@pytest.fixture(scope="module")
def openapi() -> dict:
    return create_app(Settings()).openapi()


# -- the docs pages ---------------------------------------------------------------------------------
class _Urls(HTMLParser):
    """Every src/href attribute, and every quoted path or URL in inline scripts (Swagger UI's spec url)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in {"src", "href", "spec-url"} and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.urls += re.findall(r"""["']((?:https?:)?/[^"'\s]*)["']""", data)


@pytest.mark.parametrize(
    ("page", "required"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"}),
        ("/redoc", {"redoc.standalone.js", "openapi.json"}),
    ],
)
async def test_docs_page_loads_everything_from_the_app(fakes, page, required):
    async with fakes.client() as client:
        html = await client.get(page)
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        assert not re.search(r"https?://", html.text), "the page names another host"
        parser = _Urls()
        parser.feed(html.text)
        urls = set(parser.urls)
        assert {u.rsplit("/", 1)[-1] for u in urls} >= required, urls
        for url in urls:
            absolute = urlsplit(urljoin(f"{BASE_URL}{page}", url))
            assert (absolute.scheme, absolute.netloc) == ("http", "bff"), f"{page} loads {url} from elsewhere"
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 1000, url  # the real file, not an error page
            if url.endswith(".js"):
                assert "javascript" in asset.headers["content-type"], url
            if url.endswith(".css"):
                assert asset.headers["content-type"].startswith("text/css"), url


async def test_swagger_ui_does_not_call_the_online_validator(fakes):
    async with fakes.client() as client:
        assert '"validatorUrl": null' in (await client.get("/docs")).text


# -- the OpenAPI document ---------------------------------------------------------------------------
def _operations(openapi: dict):
    for path, methods in openapi["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_the_api_and_every_operation_are_described(openapi):
    info = openapi["info"]["description"]
    assert ENTITY_KEY in info
    assert "online store" in info
    assert all(f"`{name}`" in info for name in FEATURE_NAMES), "the feature contract is in the description"
    operations = dict(_operations(openapi))
    assert set(operations) >= {"POST /predict", "POST /predict/batch", "GET /health/live", "GET /health/ready"}
    for name, operation in operations.items():
        assert operation.get("summary"), name
        assert len(operation.get("description", "")) > 40, name
        assert operation.get("tags"), name


def test_request_examples_cover_every_form(openapi):
    def examples(path: str) -> list:
        body = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        return [example["value"] for example in body["examples"].values()]

    def form(body: dict) -> str:
        given = set(FEATURE_NAMES) & set(body)
        if ENTITY_KEY not in body:
            return "features" if given == set(FEATURE_NAMES) else "incomplete"
        return "id with overrides" if given else "id"

    assert {form(body) for body in examples("/predict")} == {"features", "id", "id with overrides"}
    assert any({"features", "id"} <= {form(row) for row in batch} for batch in examples("/predict/batch"))


def test_prediction_routes_document_their_error_bodies(openapi):
    for path, statuses in PREDICTION_ROUTES.items():
        responses = openapi["paths"][path]["post"]["responses"]
        for status in statuses:
            content = responses[str(status)]["content"]["application/json"]
            assert content["schema"] == {"$ref": f"#/components/schemas/{ERROR_MODELS[status].__name__}"}, (
                path,
                status,
            )
            assert content["examples"], (path, status)
        assert "Retry-After" in responses["503"]["headers"]


def test_documented_error_examples_match_their_schemas(openapi):
    for path, statuses in PREDICTION_ROUTES.items():
        responses = openapi["paths"][path]["post"]["responses"]
        for status in statuses:
            for example in responses[str(status)]["content"]["application/json"]["examples"].values():
                ERROR_MODELS[status].model_validate(example["value"])


# -- examples and error bodies against the app --------------------------------------------------------
def _request_examples(path: str) -> list[tuple[str, object]]:
    body = create_app(Settings()).openapi()["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return [(name, example["value"]) for name, example in body["examples"].items()]


@pytest.mark.parametrize(("name", "body"), _request_examples("/predict"))
async def test_every_predict_example_is_accepted(fakes, name, body):
    async with fakes.client() as client:
        answer = await client.post("/predict", json=body)
    assert answer.status_code == 200, answer.text
    prediction = Prediction.model_validate(answer.json())
    stored = [n for n in FEATURE_NAMES if n not in body] if ENTITY_KEY in body else []
    assert prediction.features_from_store == stored
    # What the body gives reaches the model; the rest comes from the store.
    sent = dict(zip(FEATURE_NAMES, fakes.triton.matrices[0][0].tolist(), strict=True))
    expected = {**(FakeOnlineStore.rows[body[ENTITY_KEY]] if ENTITY_KEY in body else {}), **body}
    assert sent == {n: pytest.approx(float(expected[n])) for n in FEATURE_NAMES}


@pytest.mark.parametrize(("name", "body"), _request_examples("/predict/batch"))
async def test_every_batch_example_is_accepted(name, body):
    fakes = Fakes(Settings())  # the default MAX_BATCH_SIZE
    async with fakes.client() as client:
        answer = await client.post("/predict/batch", json=body)
    assert answer.status_code == 200, answer.text
    rows = (
        len(body) if isinstance(body, list) else len(body["data"]) if "data" in body else body["inputs"][0]["shape"][0]
    )
    assert len(BatchPrediction.model_validate(answer.json()).predictions) == rows


async def _error(fakes: Fakes, path: str, body, status: int) -> dict:
    async with fakes.client() as client:
        answer = await client.post(path, json=body)
    assert answer.status_code == status, answer.text
    ERROR_MODELS[status].model_validate(answer.json())
    return answer.json()


async def test_the_errors_the_app_sends_match_the_documented_schemas(fakes):
    assert (await _error(fakes, "/predict", {ENTITY_KEY: 1}, 404))[ENTITY_KEY] == [1]
    await _error(fakes, "/predict/batch", [FEATURES_EXAMPLE, {ENTITY_KEY: 1}], 404)
    await _error(fakes, "/predict/batch", [FEATURES_EXAMPLE] * 4, 413)
    for body in ({"AMT_CREDIT": "1"}, {"AMT_CREDIT": 1}, {ENTITY_KEY: -1}, {ENTITY_KEY: 1, "AMT_CREDITT": 1}):
        await _error(fakes, "/predict", body, 422)
    await _error(fakes, "/predict/batch", [], 422)
    await _error(fakes, "/predict/batch", [FEATURES_EXAMPLE, {"AMT_CREDIT": 1}], 422)
    fakes.triton.failure = DependencyUnavailableError("triton: Deadline Exceeded")
    await _error(fakes, "/predict", FEATURES_EXAMPLE, 503)
    await _error(fakes, "/predict/batch", [FEATURES_EXAMPLE], 503)


async def test_the_overload_answer_matches_the_documented_schema(fakes):
    fakes.triton.gate = asyncio.Event()
    async with fakes.client() as client:
        first = asyncio.create_task(client.post("/predict", json=FEATURES_EXAMPLE))
        await asyncio.wait_for(fakes.triton.entered.wait(), 10)  # max_in_flight=1: the first holds the slot
        shed = await client.post("/predict", json=FEATURES_EXAMPLE)
        fakes.triton.gate.set()
        assert (await first).status_code == 200
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "1"
    ErrorBody.model_validate(shed.json())


@pytest.mark.parametrize("applicant", [2**53, 2**63, 99999999999999999999999, -1])
async def test_applicant_ids_out_of_bounds_are_a_422_naming_the_field(fakes, applicant):
    # Before the bound, ids past int64 reached the online store's protobuf encoder: 500.
    async with fakes.client() as client:
        one = await client.post("/predict", json={ENTITY_KEY: applicant})
        batch = await client.post("/predict/batch", json=[{ENTITY_KEY: KNOWN_APPLICANT}, {ENTITY_KEY: applicant}])
    assert one.status_code == 422
    assert [e["loc"] for e in one.json()["detail"]] == [["body", ENTITY_KEY]]
    assert batch.status_code == 422
    assert [e["loc"] for e in batch.json()["detail"]] == [["body", 1, ENTITY_KEY]]


async def test_null_is_an_unknown_value_and_an_absent_feature_an_error(fakes):
    with_null = {**FEATURES_EXAMPLE, "AMT_ANNUITY": None}
    absent = {k: v for k, v in FEATURES_EXAMPLE.items() if k != "AMT_ANNUITY"}
    async with fakes.client() as client:
        scored = await client.post("/predict", json=with_null)
        refused = await client.post("/predict", json=absent)
        # With an id: a null overrides the stored value with "unknown"; the rest comes from the store.
        override = await client.post("/predict", json={ENTITY_KEY: KNOWN_APPLICANT, "AMT_CREDIT": None})
    assert scored.status_code == 200, scored.text
    assert scored.json()["missing_features"] == ["AMT_ANNUITY"]
    sent = fakes.triton.matrices[0][0]
    assert np.isnan(sent[FEATURE_NAMES.index("AMT_ANNUITY")])
    assert np.count_nonzero(np.isnan(sent)) == 1
    assert refused.status_code == 422
    assert [(e["loc"], e["type"]) for e in refused.json()["detail"]] == [(["body", "AMT_ANNUITY"], "missing")]
    assert "null if the value is unknown" in refused.json()["detail"][0]["msg"]
    assert override.status_code == 200
    assert override.json()["missing_features"] == ["AMT_CREDIT"]
    assert "AMT_CREDIT" not in override.json()["features_from_store"]
    assert np.isnan(fakes.triton.matrices[1][0][FEATURE_NAMES.index("AMT_CREDIT")])


async def test_a_value_the_online_store_lacks_is_missing_too(fakes, monkeypatch):
    no_bureau = {**FEATURES_EXAMPLE, "bureau_credit_days_enddate_mean": None}
    monkeypatch.setitem(FakeOnlineStore.rows, 7, no_bureau)
    async with fakes.client() as client:
        answer = await client.post("/predict", json={ENTITY_KEY: 7})
    assert answer.status_code == 200, answer.text
    assert answer.json()["missing_features"] == ["bureau_credit_days_enddate_mean"]
    assert np.isnan(fakes.triton.matrices[0][0][FEATURE_NAMES.index("bureau_credit_days_enddate_mean")])


@pytest.mark.parametrize("output", [np.nan, 1.5, -0.1])
async def test_an_invalid_model_output_is_a_500_never_a_null_probability(fakes, monkeypatch, output):
    async def broken_model(features, version="", request_id=""):
        return np.array([0.2, output], dtype=np.float32), "7"

    monkeypatch.setattr(fakes.triton, "predict", broken_model)
    async with fakes.client() as client:
        answer = await client.post("/predict/batch", json=[FEATURES_EXAMPLE, FEATURES_EXAMPLE])
    assert answer.status_code == 500
    ErrorBody.model_validate(answer.json())
    assert "returned 1 probabilities outside [0, 1]" in answer.json()["detail"]
    assert "version 7" in answer.json()["detail"]


async def test_a_body_over_the_limit_is_refused_before_it_is_parsed():
    fakes = Fakes(Settings(max_body_bytes=4096))
    small = json.dumps(FEATURES_EXAMPLE).encode()
    big = json.dumps([FEATURES_EXAMPLE] * 40).encode()
    assert len(small) < 4096 < len(big)

    async def chunks(body: bytes):
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    async with fakes.client() as client:
        declared = await client.post("/predict/batch", content=big, headers={"content-type": "application/json"})
        chunked = await client.post("/predict/batch", content=chunks(big), headers={"content-type": "application/json"})
        chunked_small = await client.post(
            "/predict", content=chunks(small), headers={"content-type": "application/json"}
        )
        labels = await client.post("/labels", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert (
        declared.json()["detail"]
        == f"request body of {len(big)} bytes exceeds the limit of 4096 bytes (MAX_BODY_BYTES)"
    )
    assert chunked.status_code == 413
    assert chunked.json()["detail"].startswith("chunked request body exceeds the limit of 4096 bytes")
    ErrorBody.model_validate(chunked.json())
    # Refused before parsing: not a 422 for the invalid JSON of /labels; Triton saw only the small request.
    assert labels.status_code == 413
    assert len(fakes.triton.matrices) == 1
    assert chunked_small.status_code == 200, chunked_small.text


async def test_a_body_that_arrives_too_slowly_gets_408_and_frees_its_slot():
    fakes = Fakes(Settings(body_read_timeout_s=0.2, max_in_flight=1))
    first, rest = json.dumps(FEATURES_EXAMPLE).encode()[:10], json.dumps(FEATURES_EXAMPLE).encode()[10:]

    async def trickle():
        yield first
        await asyncio.sleep(5)  # a slow client: far past BODY_READ_TIMEOUT_S
        yield rest

    async with fakes.client() as client:
        slow = await asyncio.wait_for(
            client.post("/predict", content=trickle(), headers={"content-type": "application/json"}), timeout=3
        )
        # The only in-flight slot (MAX_IN_FLIGHT=1) is free again.
        after = await client.post("/predict", json=FEATURES_EXAMPLE)
    assert slow.status_code == 408
    assert slow.json() == {"detail": "request body not received within 0.2 s (BODY_READ_TIMEOUT_S)"}
    assert after.status_code == 200
    assert len(fakes.triton.matrices) == 1


async def test_a_body_that_is_not_utf8_is_the_documented_422(fakes):
    async with fakes.client() as client:
        answer = await client.post("/predict", content=b"/\xff", headers={"content-type": "application/json"})
    assert answer.status_code == 422
    ValidationErrorBody.model_validate(answer.json())
    assert answer.json()["detail"][0]["type"] == "json_invalid"


async def test_a_prediction_past_its_time_budget_is_a_503():
    fakes = Fakes(Settings(request_budget_s=0.2))
    fakes.triton.gate = asyncio.Event()  # Triton never answers
    async with fakes.client() as client:
        answer = await client.post("/predict", json=FEATURES_EXAMPLE)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "took longer than 0.2 s (REQUEST_BUDGET_S)" in answer.json()["detail"]


async def test_request_ids_come_from_x_request_id_and_reach_triton_and_the_answer(fakes):
    async with fakes.client() as client:
        one = await client.post("/predict", json=FEATURES_EXAMPLE, headers={"X-Request-ID": "order-17:a"})
        batch = await client.post("/predict/batch", json=[FEATURES_EXAMPLE] * 2, headers={"X-Request-ID": "b.9"})
        made_up = await client.post("/predict", json=FEATURES_EXAMPLE)
        bad = await client.post("/predict", json=FEATURES_EXAMPLE, headers={"X-Request-ID": "no spaces"})
    assert one.json()["request_id"] == one.headers["x-request-id"] == "order-17:a"
    assert [p["request_id"] for p in batch.json()["predictions"]] == ["b.9-0", "b.9-1"]
    assert batch.headers["x-request-id"] == "b.9"
    assert made_up.json()["request_id"] == made_up.headers["x-request-id"]
    assert len(made_up.json()["request_id"]) == 32
    assert fakes.triton.request_ids == ["order-17:a", "b.9", made_up.json()["request_id"]]
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["header", "X-Request-ID"]]


async def test_docs_can_be_switched_off():
    closed = Fakes(Settings(api_docs_enabled=False))
    async with closed.client() as client:
        statuses = [(await client.get(path)).status_code for path in ("/docs", "/redoc", "/openapi.json")]
        prediction = await client.post("/predict", json=FEATURES_EXAMPLE)
    assert statuses == [404, 404, 404]
    assert prediction.status_code == 200
