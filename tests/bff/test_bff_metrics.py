"""The BFF's metrics: every route and status series exists from start-up, requests are counted by
route, and /metrics adds up the BFF's worker processes (not what libraries register beside them)."""

import shutil
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_api_docs import Fakes

import bff.workers
from bff.app import create_app
from bff.metrics import REGISTRY, ROUTE_STATUSES
from bff.settings import Settings
from bff.workers import MULTIPROCESS_VARIABLES, serve_worker_metrics, share_metrics_between_workers
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


# A worker process of `python -m bff`, as far as metrics go: Feast's import creates metrics of its own in the
# shared directory too; a worker that exits gracefully retires its live gauges.
WORKER = """
import sys
import feast.metrics
from bff.metrics import IN_FLIGHT, REQUESTS
from bff.workers import retire_worker_metrics
requests, in_flight, graceful_exit = map(int, sys.argv[1:])
REQUESTS.labels("/predict", "200").inc(requests)
IN_FLIGHT.inc(in_flight)
if graceful_exit:
    retire_worker_metrics()
"""


def test_metrics_of_the_workers_are_summed_on_their_own_port_with_no_feast_metrics(monkeypatch):
    for name in MULTIPROCESS_VARIABLES:
        monkeypatch.setenv(name, "")  # restored after the test
    directory = share_metrics_between_workers()
    for requests, in_flight, graceful_exit in ((3, 2, 0), (4, 5, 1)):
        subprocess.run([sys.executable, "-c", WORKER, str(requests), str(in_flight), str(graceful_exit)], check=True)
    assert any(path.name.startswith("counter_") for path in directory.iterdir())
    port = free_port()
    server = serve_worker_metrics(directory, "127.0.0.1", port)
    try:
        exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        shutil.rmtree(directory)
    families = {family.name: family for family in text_string_to_metric_families(exposition)}
    [predicted] = [s for s in families["bff_requests"].samples if s.labels == {"route": "/predict", "status": "200"}]
    assert predicted.value == 3 + 4
    # The worker that exited gracefully no longer counts in the live sum.
    assert families["bff_in_flight_requests"].samples[0].value == 2
    assert not [name for name in families if not name.startswith("bff_")]


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", "all"), ("100000 100000", 1), ("150000 100000", 1), ("50000 100000", 1), ("", "all")],
)
def test_usable_cpus_follow_the_cgroup_cpu_limit(monkeypatch, tmp_path, cpu_max, expected):
    monkeypatch.setattr(bff.workers.os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(bff.workers, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    assert bff.workers.usable_cpus() == (4 if expected == "all" else expected)
    assert Settings(bff_workers=0).worker_processes() == bff.workers.usable_cpus()
    assert Settings(bff_workers=3).worker_processes() == 3


async def test_metrics_are_not_on_the_api_port():
    # The API's port is the one a NodePort or an Ingress makes public.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app()), base_url="http://bff") as client:
        assert (await client.get("/metrics")).status_code == 404
