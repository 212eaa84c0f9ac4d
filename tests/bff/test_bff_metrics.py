"""The BFF's metrics: every route and status series exists from start-up, requests are counted by
route, and /metrics serves the BFF's own registry (not what libraries register in the default one)."""

import httpx
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import generate_latest
from test_api_docs import Fakes

from bff.app import create_app
from bff.metrics import REGISTRY, ROUTE_STATUSES, serve_metrics
from bff.settings import Settings
from devstack.processes import free_port


def test_every_route_and_status_series_exists_from_start_up():
    for route, statuses in ROUTE_STATUSES.items():
        assert REGISTRY.get_sample_value("bff_request_duration_seconds_count", {"route": route}) is not None
        for status in statuses:
            assert REGISTRY.get_sample_value("bff_requests_total", {"route": route, "status": status}) is not None


def test_the_statuses_are_those_the_routes_document():
    paths = create_app().openapi()["paths"]
    for route, statuses in ROUTE_STATUSES.items():
        documented = set(paths[route]["post"]["responses"]) | {"500"}  # 500: the handler of unexpected errors
        assert documented == set(statuses), route


async def test_requests_are_counted_by_route():
    def count() -> float:
        return REGISTRY.get_sample_value("bff_requests_total", {"route": "/predict/batch", "status": "422"})

    before = count()
    fakes = Fakes(Settings())
    async with fakes.client() as client:
        response = await client.post("/predict/batch", content=b"[{", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert count() == before + 1
    assert fakes.triton.matrices == []


def test_metrics_are_served_on_their_own_port_with_no_feast_metrics(monkeypatch, tmp_path):
    # Feast registers its feature-server metrics in prometheus_client's default registry when
    # feast.metrics is imported, which the BFF's first online-store read does. Without a multiprocess
    # directory already set, that import also sets one in os.environ for the rest of the process.
    monkeypatch.setenv("PROMETHEUS_MULTIPROCESS_DIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    import feast.metrics  # noqa: F401

    assert b"feast_feature_server" in generate_latest(DEFAULT_REGISTRY), "feast no longer registers its metrics"
    port = free_port()
    server = serve_metrics("127.0.0.1", port)
    try:
        exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    assert 'bff_requests_total{route="/predict",status="503"}' in exposition
    assert "process_cpu_seconds_total" in exposition
    assert "feast_" not in exposition


async def test_metrics_are_not_on_the_api_port():
    # The API's port is the one a NodePort or an Ingress makes public.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app()), base_url="http://bff") as client:
        assert (await client.get("/metrics")).status_code == 404
