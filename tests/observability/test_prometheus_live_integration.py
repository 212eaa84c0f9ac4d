"""The dashboards and alerts on a real Prometheus scraping this session's own running platform.

Prometheus is the local stack's (devstack.prometheus: the scrape config generated from
observability/scrape-targets.yaml with the Prometheus Operator's target labels, the repository's rule
files). The platform: its own Triton, model sync, BFF and log worker on the session's servers.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from observability_files import CLUSTER_ONLY_EXPRESSIONS, GPU_ONLY_EXPRESSIONS, OBSERVABILITY
from platform_fixtures import QUICK_MODEL, settings_from
from serving_fixtures import Serving, faults_env, start_serving, wait_for

from bff.api_keys import hash_key, new_key
from bff.schemas import FEATURES_EXAMPLE
from dashboards.grafana import QueryWindow, iter_panel_queries, load_dashboards
from dashboards.render import render_all
from devstack import system_services as sys_svc
from devstack.components import TritonServer, app_daemon, start_triton
from devstack.processes import Daemon, free_port
from devstack.prometheus import prometheus_daemon, write_config
from devstack.settings import Settings as StackSettings
from trainer.settings import Settings as TrainerSettings
from trainer.train import TrainingRequest, train

pytestmark = pytest.mark.integration

SCRAPE_INTERVAL_S = 1.0
DASHBOARDS_DIR = OBSERVABILITY / "dashboards"
# The explicit allow-list: series this machine cannot have (GPU metrics, the kubelet's cAdvisor).
NO_DATA_HERE = GPU_ONLY_EXPRESSIONS | CLUSTER_ONLY_EXPRESSIONS


@dataclass
class LivePlatform:
    env: dict[str, str]
    triton: TritonServer
    serving: Serving
    log_worker: Daemon
    prometheus_url: str

    def query(self, expr: str) -> list[dict]:
        answer = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert answer.status_code == 200, f"{expr}: {body}"
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def alert_states(self) -> dict[str, set[str]]:
        alerts = httpx.get(f"{self.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        states: dict[str, set[str]] = {}
        for alert in alerts:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    def wait_for_alert(self, name: str, timeout_s: float = 60) -> None:
        wait_for(lambda: {"pending", "firing"} & self.alert_states().get(name, set()), timeout_s, f"{name} pending")


# The live BFF requires API keys, as in the chart's prod values, so the per-key panel has data.
API_KEY = new_key()
KEYED = {"Authorization": f"Bearer {API_KEY}"}


def traffic(bff_url: str, rounds: int) -> None:
    """Good single and batch requests, entity lookups, 4xx of several kinds."""
    with httpx.Client(base_url=bff_url, timeout=15) as anonymous:
        assert anonymous.post("/predict", json=FEATURES_EXAMPLE).status_code == 401
    with httpx.Client(base_url=bff_url, timeout=15, headers=KEYED) as client:
        for n in range(rounds):
            assert client.post("/predict", json={**FEATURES_EXAMPLE, "AMT_CREDIT": 1e5 + n}).status_code == 200
            assert client.post("/predict", json={"SK_ID_CURR": 100002}).status_code == 200
            assert client.post("/predict/batch", json=[FEATURES_EXAMPLE, {"SK_ID_CURR": 100003}]).status_code == 200
            assert client.post("/predict", json={"SK_ID_CURR": 999999999}).status_code == 404
            assert client.post("/predict", json={"AMT_CREDIT": "lots"}).status_code == 422
            assert client.post("/predict/batch", json=[]).status_code == 422


@pytest.fixture(scope="module")
def live(trained_platform, s3_server, unique_name, tmp_path_factory) -> Iterator[LivePlatform]:
    work = tmp_path_factory.mktemp("live-observability")
    triton = start_triton(
        work / "model_repository",
        free_port(),
        free_port(),
        free_port(),
        work / "logs" / "triton.log",
        home_dir=work / "triton-home",
        die_with_parent=True,
    )
    env = faults_env(
        trained_platform,
        s3_server,
        unique_name,
        work,
        TRITON_GRPC_URL=triton.grpc_url,
        TRITON_HTTP_URL=triton.http_url,
        MODEL_REPOSITORY=str(triton.model_repository),
        API_KEYS_REQUIRED="true",
        API_KEYS=json.dumps({"observability-test": hash_key(API_KEY)}),
    )
    stack = StackSettings()
    sys_svc.ensure_rabbitmq_prometheus(stack.rabbitmq_host_port[0], stack.rabbitmq_prometheus_port)
    addresses = {
        "bff": f"127.0.0.1:{env['BFF_PORT']}",
        "triton": f"127.0.0.1:{triton.metrics_port}",
        "model-sync": f"127.0.0.1:{env['MODEL_SYNC_METRICS_PORT']}",
        "log-worker": f"127.0.0.1:{env['LOG_WORKER_METRICS_PORT']}",
        "rabbitmq": f"{stack.rabbitmq_host_port[0]}:{stack.rabbitmq_prometheus_port}",
    }
    config = work / "prometheus" / "prometheus.yml"
    write_config(config, addresses, interval_s=SCRAPE_INTERVAL_S)
    prometheus = prometheus_daemon(
        config, work / "prometheus" / "data", free_port(), work / "logs" / "prometheus.log", die_with_parent=True
    ).start()
    serving = log_worker = None
    try:
        serving = start_serving(env, work / "logs")
        log_worker = app_daemon(
            "log_worker", "log_worker", work / "logs" / "log_worker.log", env=env, die_with_parent=True
        ).start()
        yield LivePlatform(env, triton, serving, log_worker, prometheus.address)
    finally:
        for daemon in (log_worker, serving and serving.bff, serving and serving.model_sync, prometheus, triton):
            if daemon is not None:
                daemon.stop()


def test_every_dashboard_query_returns_data(live: LivePlatform) -> None:
    traffic(live.serving.bff_url, rounds=5)
    # A few scrapes after the traffic; then every rate window of 4 scrape intervals has it.
    time.sleep(6 * SCRAPE_INTERVAL_S)
    window = QueryWindow(range_s=300, scrape_interval_s=SCRAPE_INTERVAL_S)
    empty, checked = [], 0
    for dashboard in load_dashboards(DASHBOARDS_DIR):
        for query in iter_panel_queries(dashboard, window=window):
            checked += 1
            result = live.query(query.expr)  # fails on a query Prometheus cannot parse
            if not result and query.raw_expr not in NO_DATA_HERE:
                empty.append(f"{query.dashboard} / {query.panel}: {query.expr}")
    assert checked > 30
    assert not empty, "panels without data:\n" + "\n".join(empty)

    # By-route panels keep /predict and /predict/batch apart (the Operator's `endpoint` label cannot clash).
    routes = {s["metric"].get("route") for s in live.query("sum by (route) (bff_requests_total)")}
    assert {"/predict", "/predict/batch"} <= routes
    scraped = {(s["metric"]["job"], s["metric"]["endpoint"]) for s in live.query("up == 1")}
    assert scraped == {
        ("mlops-bff", "http"),
        ("mlops-triton", "metrics"),
        ("mlops-triton", "sync-metrics"),
        ("mlops-log-worker", "metrics"),
        ("mlops-rabbitmq", "prometheus"),
    }

    rules = httpx.get(f"{live.prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    unhealthy = [(r["name"], r.get("lastError")) for g in rules for r in g["rules"] if r["health"] != "ok"]
    assert rules
    assert not unhealthy


def test_dashboards_render_from_the_live_prometheus(live: LivePlatform, tmp_path: Path) -> None:
    traffic(live.serving.bff_url, rounds=2)
    time.sleep(4 * SCRAPE_INTERVAL_S)
    end = datetime.now(UTC)
    pictures = render_all(
        live.prometheus_url,
        DASHBOARDS_DIR,
        tmp_path,
        end - timedelta(minutes=5),
        end,
        scrape_interval_s=SCRAPE_INTERVAL_S,
    )
    assert len(pictures) == len(load_dashboards(DASHBOARDS_DIR))
    for picture in pictures:
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = [p for p in pictures.empty_panels() if not set(p.queries) <= NO_DATA_HERE]
    assert not empty, [f"{p.dashboard} / {p.panel}" for p in empty]


def test_alerts_fire_on_the_real_conditions(live: LivePlatform, unique_name) -> None:
    """Provoked, not simulated: a model Triton refuses, Triton gone (503s, target down)."""
    # Model load failed: a model sync whose config asks for a GPU this Triton does not have, scraped at 0
    # failures first, then given a champion to load.
    live.serving.model_sync.stop()
    gpu_env = {
        **live.env,
        "REGISTERED_MODEL_NAME": unique_name("gpu-model"),
        "TRITON_MODEL_NAME": unique_name("gpu_model", sep="_"),
        "TRITON_INSTANCE_KIND": "KIND_GPU",
    }
    log_dir = Path(live.serving.model_sync.log_path).parent
    gpu_sync = app_daemon("model_sync_gpu", "model_sync", log_dir / "model_sync_gpu.log", env=gpu_env).start()
    try:
        wait_for(lambda: live.query('model_sync_loads_total{outcome="failure"} == 0'), 30, "failure counter at 0")
        train(settings_from(TrainerSettings, gpu_env), TrainingRequest(hyperparameters=QUICK_MODEL))
        live.wait_for_alert("MlopsModelLoadFailed")
    finally:
        gpu_sync.stop()

    # Triton gone: every prediction is a 503 (error ratio) and its target is down.
    live.triton.stop()
    with httpx.Client(base_url=live.serving.bff_url, timeout=15, headers=KEYED) as client:
        for _ in range(20):
            assert client.post("/predict", json=FEATURES_EXAMPLE).status_code == 503
    live.wait_for_alert("MlopsBffHighErrorRatio")
    live.wait_for_alert("MlopsServingTargetDown")
