"""The BFF's routing in process (ASGI transport, fakes of Triton and the online store): a batch split by
role with one call per version, a failing challenger never failing a client, shadow answers identical
to the champion's, and every series a rollout's analysis reads."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from bff.app import Platform, create_app
from bff.metrics import REGISTRY, RequestsInFlight
from bff.routing import Router
from bff.schemas import FEATURES_EXAMPLE
from bff.settings import Settings
from mlops_common.errors import DependencyUnavailableError
from mlops_common.inference_log import InferenceLogRecord
from mlops_common.inference_log_wire import WireBlock, block_lines
from mlops_common.rollout import RolloutMode, RolloutPolicy, Routing, routing_key

CHAMPION, CHALLENGER = "4", "5"
SCORES = {CHAMPION: 0.25, CHALLENGER: 0.75}


class VersionedTriton:
    """Answers a version's fixed probability; a version in ``broken`` fails the way it is told to."""

    model_name = "credit_default"
    timeout_s = 1.0

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.broken: dict[str, str] = {}

    async def predict(self, features: np.ndarray, *, version: str = "", request_id: str = ""):
        self.calls.append((version, len(features), request_id))
        if self.broken.get(version) == "nan":
            return np.full(len(features), np.nan, dtype=np.float32), version
        if self.broken.get(version) == "down":
            raise DependencyUnavailableError("triton: version not found")
        return np.full(len(features), SCORES[version or CHAMPION], dtype=np.float32), version or CHAMPION


class NoStore:
    async def fetch(self, entity_ids):
        raise AssertionError("the tests send features only")


class Logged:
    """The publisher's request-path side: the records read back as the log worker reads them."""

    def __init__(self) -> None:
        self.records = []

    def submit_block(self, block: WireBlock) -> None:
        self.records += [InferenceLogRecord.from_json_bytes(line) for line in block_lines(block)]


@pytest.fixture
def serving():
    triton = VersionedTriton()
    router = Router(
        triton,
        refresh_s=60,
        shadow_max_pending=8,
        max_rows=256,
        merge_min_in_flight=0,
        requests_in_flight=RequestsInFlight(),
    )  # type: ignore[arg-type]
    logs = Logged()
    settings = Settings()
    app = create_app(settings)
    platform = Platform(settings, triton, router, NoStore(), logs, dependencies=None)  # type: ignore[arg-type]
    app.state.platform = platform  # what the lifespan sets in the service

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bff")

    return triton, router, logs, client


def route(router: Router, mode: RolloutMode, percent: float = 50.0) -> Routing:
    from bff.metrics import track_routing

    routing = Routing(CHAMPION, CHALLENGER, RolloutPolicy(mode, percent, 1.0))
    track_routing(router.routing, routing)
    router.routing = routing
    return routing


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_canary_batch_is_split_by_applicant_with_one_call_per_version(serving):
    triton, router, logs, client = serving
    routing = route(router, RolloutMode.CANARY, 50.0)
    async with client() as c:
        answer = await c.post("/predict/batch", json=[FEATURES_EXAMPLE] * 40, headers={"X-Request-ID": "batch-1"})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    keys = np.array([routing_key(None, f"batch-1-{i}") for i in range(40)], dtype=np.uint64)
    expected_canary = routing.canary_rows(keys)
    assert 0 < expected_canary.sum() < 40
    assert [p["model_role"] for p in predictions] == ["canary" if c else "champion" for c in expected_canary]
    assert [p["model_version"] for p in predictions] == [CHALLENGER if c else CHAMPION for c in expected_canary]
    assert [p["probability"] for p in predictions] == [SCORES[p["model_version"]] for p in predictions]
    assert sorted(v for v, _, _ in triton.calls) == [CHAMPION, CHALLENGER]
    assert [r.role for r in logs.records] == [p["model_role"] for p in predictions]


async def test_a_challenger_that_answers_nan_or_fails_never_fails_a_client(serving):
    triton, router, _logs, client = serving
    route(router, RolloutMode.CANARY, 100.0)
    for failure in ("nan", "down"):
        triton.broken = {CHALLENGER: failure}
        errors = sample("bff_model_calls_total", {"version": CHALLENGER, "role": "canary", "outcome": "error"})
        async with client() as c:
            answer = await c.post("/predict/batch", json=[FEATURES_EXAMPLE] * 3)
        assert answer.status_code == 200, answer.text
        assert {(p["model_version"], p["model_role"]) for p in answer.json()["predictions"]} == {(CHAMPION, "champion")}
        assert sample("bff_model_calls_total", {"version": CHALLENGER, "role": "canary", "outcome": "error"}) == (
            errors + 1
        )


async def test_shadow_answers_are_the_champions_bytes_and_the_challengers_are_logged(serving):
    triton, router, logs, client = serving
    headers = {"X-Request-ID": "same-id"}
    async with client() as c:
        route(router, RolloutMode.OFF)
        plain = await c.post("/predict/batch", json=[FEATURES_EXAMPLE] * 3, headers=headers)
        route(router, RolloutMode.SHADOW)
        disagree = sample("bff_shadow_comparisons_total", {"outcome": "disagree"})
        shadowed = await c.post("/predict/batch", json=[FEATURES_EXAMPLE] * 3, headers=headers)
        await asyncio.gather(*router._shadows)
    assert shadowed.content == plain.content
    shadow_records = [r for r in logs.records if r.role == "shadow"]
    assert [(r.request_id, r.model_version, r.probability) for r in shadow_records] == [
        (f"same-id-{i}~shadow", CHALLENGER, SCORES[CHALLENGER]) for i in range(3)
    ]
    # 0.25 vs 0.75 around the 0.5 threshold: three rows that disagree.
    assert sample("bff_shadow_comparisons_total", {"outcome": "disagree"}) == disagree + 3
    assert [v for v, _, _ in triton.calls] == [CHAMPION, CHAMPION, CHALLENGER]
    assert triton.calls[-1][2] == "same-id~shadow"


async def test_without_a_published_routing_triton_picks_the_version(serving):
    triton, _router, _logs, client = serving
    async with client() as c:
        answer = await c.post("/predict", json=FEATURES_EXAMPLE)
    assert (answer.json()["model_version"], answer.json()["model_role"]) == (CHAMPION, "champion")
    assert triton.calls[0][0] == ""
