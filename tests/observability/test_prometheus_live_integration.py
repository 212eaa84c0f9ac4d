"""The dashboards and alerts on a real Prometheus scraping this session's own running platform.

Prometheus is the local stack's (devstack.prometheus: the scrape config generated from
observability/scrape-targets.yaml with the Prometheus Operator's target labels, the repository's rule
files). The platform: its own Triton, model sync, BFF and log worker on the session's servers.
"""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from observability_files import CLUSTER_ONLY_EXPRESSIONS, GPU_ONLY_EXPRESSIONS, OBSERVABILITY
from platform_fixtures import QUICK_MODEL, settings_from
from scoring_tables import feature_table, put_table
from serving_fixtures import Serving, faults_env, register_onnx, start_serving, wait_for

from bff.api_keys import hash_key, new_key
from bff.schemas import FEATURES_EXAMPLE
from dashboards.grafana import QueryWindow, iter_panel_queries, load_dashboards
from dashboards.render import render_all
from devstack import system_services as sys_svc
from devstack.components import TritonServer, app_daemon, start_triton
from devstack.processes import Daemon, free_port
from devstack.prometheus import NAMESPACE, prometheus_daemon, write_config
from devstack.settings import Settings as StackSettings
from mlops_common.features import FEATURE_NAMES
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
    monitor: Daemon
    job_worker: Daemon
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
    """Good single and batch requests, entity lookups, 4xx of several kinds; then the two looked-up
    applicants' outcomes, the opposite of what the model ranks (a live ROC AUC of 0, below any floor)."""
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
        scores = {
            applicant: client.post("/predict", json={"SK_ID_CURR": applicant}).json()["probability"]
            for applicant in (100002, 100003)
        }
        riskier = max(scores, key=scores.get)
        observed_at = datetime.now(UTC).isoformat()
        labels = [
            {"applicant_id": applicant, "outcome": int(applicant != riskier), "observed_at": observed_at}
            for applicant in scores
        ]
        assert client.post("/labels", json={"labels": labels}).status_code == 200


@contextmanager
def steady_traffic(bff_url: str) -> Iterator[None]:
    """Batch predictions in the background, so that each of the monitor's short windows has rows to judge
    (or, with Triton stopped, so that 503s outnumber what the error ratio's window holds)."""
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=bff_url, timeout=15, headers=KEYED) as client:
            while not stop.wait(0.2):
                client.post("/predict/batch", json=[FEATURES_EXAMPLE, {"SK_ID_CURR": 100002}, {"SK_ID_CURR": 100003}])

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join(timeout=30)


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
    prometheus_port = free_port()
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
        # The monitor on a short window, judging from few rows (the traffic repeats a handful of applicants:
        # every feature drifts) and two labels; retraining decided and counted, not started. The log worker
        # writes every half second, so that every window holds rows of both versions: a window holding none of a
        # version removes its drift series, and a panel read at that moment would show nothing.
        MONITOR_WINDOW_S="10",
        BATCH_MAX_AGE_S="0.5",
        MONITOR_EXPERIMENT_NAME=unique_name("monitoring"),
        DRIFT_MIN_ROWS="1",
        QUALITY_MIN_LABELED_ROWS="2",
        LABEL_MAX_AGE_S="1",
        # A registry of its own with a challenger scored in shadow the whole time, so that the rollout
        # dashboard has data: the analysis runs and exports its figures, but never reaches a decision.
        REGISTERED_MODEL_NAME=unique_name("live"),
        MLFLOW_EXPERIMENT_NAME=unique_name("live"),
        ROLLOUT_MODE="shadow",
        PROMETHEUS_URL=f"http://127.0.0.1:{prometheus_port}",
        ROLLOUT_SCRAPE_INTERVAL_S=str(SCRAPE_INTERVAL_S),
        ROLLOUT_ANALYSIS_INTERVAL_S="2",
        ROLLOUT_MIN_CALLS=str(10**9),
        ROUTING_REFRESH_S="0.2",
        JOBS_QUEUE=unique_name("jobs"),
        JOB_WORKER_METRICS_PORT=str(free_port()),
        JOB_LOG_DIR=str(work / "logs" / "jobs"),
        JOB_STATS_INTERVAL_S=str(SCRAPE_INTERVAL_S),
    )
    trained = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(
        trained_platform.env["REGISTERED_MODEL_NAME"], "champion"
    )
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])  # models:/ URIs go to the process-wide tracking URI
    model = mlflow.onnx.load_model(f"models:/{trained.name}/{trained.version}")
    registry = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for alias in ("champion", "challenger"):
        version = register_onnx(env, model, profile_of=trained.run_id)
        registry.set_registered_model_alias(env["REGISTERED_MODEL_NAME"], alias, version)
    stack = StackSettings()
    sys_svc.ensure_rabbitmq_prometheus(stack.rabbitmq_host_port[0], stack.rabbitmq_prometheus_port)
    addresses = {
        "bff": f"127.0.0.1:{env['BFF_METRICS_PORT']}",
        "triton": f"127.0.0.1:{triton.metrics_port}",
        "model-sync": f"127.0.0.1:{env['MODEL_SYNC_METRICS_PORT']}",
        "log-worker": f"127.0.0.1:{env['LOG_WORKER_METRICS_PORT']}",
        "monitor": f"127.0.0.1:{env['MONITOR_METRICS_PORT']}",
        "job-worker": f"127.0.0.1:{env['JOB_WORKER_METRICS_PORT']}",
        "rabbitmq": f"{stack.rabbitmq_host_port[0]}:{stack.rabbitmq_prometheus_port}",
    }
    config = work / "prometheus" / "prometheus.yml"
    write_config(config, addresses, interval_s=SCRAPE_INTERVAL_S)
    prometheus = prometheus_daemon(
        config, work / "prometheus" / "data", prometheus_port, work / "logs" / "prometheus.log", die_with_parent=True
    ).start()
    serving = log_worker = monitor = job_worker = None
    try:
        serving = start_serving(env, work / "logs")
        log_worker = app_daemon(
            "log_worker", "log_worker", work / "logs" / "log_worker.log", env=env, die_with_parent=True
        ).start()
        monitor = app_daemon("monitor", "monitor", work / "logs" / "monitor.log", env=env, die_with_parent=True).start()
        job_worker = app_daemon(
            "job_worker", "job_worker", work / "logs" / "job_worker.log", env=env, die_with_parent=True
        ).start()
        yield LivePlatform(env, triton, serving, log_worker, monitor, job_worker, prometheus.address)
    finally:
        for daemon in (
            job_worker,
            monitor,
            log_worker,
            serving and serving.bff,
            serving and serving.model_sync,
            prometheus,
            triton,
        ):
            if daemon is not None:
                daemon.stop()


def score_job(live: LivePlatform, s3_server) -> None:
    """One scoring job through the API, for the jobs dashboard (rows scored, an attempt's duration)."""
    bucket = s3_server.new_bucket("scores")
    source = put_table(s3_server, bucket, "in/rows.parquet", feature_table(500))
    with httpx.Client(base_url=live.serving.bff_url, timeout=15, headers=KEYED) as client:
        answer = client.post("/jobs/score", json={"input": source, "output": f"s3://{bucket}/out"})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        wait_for(lambda: client.get(f"/jobs/{job_id}").json()["state"] == "succeeded", 120, f"job {job_id} succeeded")


def test_every_dashboard_query_returns_data(live: LivePlatform, s3_server) -> None:
    score_job(live, s3_server)
    traffic(live.serving.bff_url, rounds=5)
    with steady_traffic(live.serving.bff_url):
        # The monitor's figures need the logs in the table (log worker) and a window over them.
        wait_for(lambda: live.query("monitor_live_roc_auc"), 60, "the monitor's live AUC")
        wait_for(lambda: live.query("monitor_feature_psi"), 60, "the monitor's drift figures")
        # The window's decision is counted after its figures, its report and its MLflow calls (seconds here).
        wait_for(
            lambda: live.query("sum(increase(monitor_retraining_decisions_total[1h])) > 0"), 60, "a decision counted"
        )
        # A few scrapes after the traffic; then every rate window of 4 scrape intervals has it.
        time.sleep(6 * SCRAPE_INTERVAL_S)
        window = QueryWindow(range_s=300, scrape_interval_s=SCRAPE_INTERVAL_S)
        empty, checked, elsewhere = [], 0, []
        for dashboard in load_dashboards(DASHBOARDS_DIR):
            # The `namespace` variable on the namespace the Operator's labels give the stack's targets, as
            # the chart's dashboards start; on another namespace the same panels show nothing of it.
            for query in iter_panel_queries(dashboard, window=window, namespace=NAMESPACE):
                checked += 1
                result = live.query(query.expr)  # fails on a query Prometheus cannot parse
                if not result and query.raw_expr not in NO_DATA_HERE:
                    empty.append(f"{query.dashboard} / {query.panel}: {query.expr}")
            for query in iter_panel_queries(dashboard, window=window, namespace="another-environment"):
                if live.query(query.expr):
                    elsewhere.append(f"{query.dashboard} / {query.panel}: {query.expr}")
    assert checked > 30
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert not elsewhere, "panels showing another namespace's series:\n" + "\n".join(elsewhere)

    # By-route panels keep /predict and /predict/batch apart (the Operator's `endpoint` label cannot clash).
    routes = {s["metric"].get("route") for s in live.query("sum by (route) (bff_requests_total)")}
    assert {"/predict", "/predict/batch"} <= routes
    scraped = {(s["metric"]["job"], s["metric"]["endpoint"]) for s in live.query("up == 1")}
    assert scraped == {
        ("mlops-bff", "metrics"),
        ("mlops-triton", "metrics"),
        ("mlops-triton", "sync-metrics"),
        ("mlops-log-worker", "metrics"),
        ("mlops-monitor", "metrics"),
        ("mlops-job-worker", "metrics"),
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
        variables={"namespace": NAMESPACE},
    )
    assert len(pictures) == len(load_dashboards(DASHBOARDS_DIR))
    for picture in pictures:
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The rendered queries carry the namespace the variable was set to.
    no_data_here = {expr.replace("$namespace", NAMESPACE) for expr in NO_DATA_HERE}
    empty = [p for p in pictures.empty_panels() if not set(p.queries) <= no_data_here]
    assert not empty, [f"{p.dashboard} / {p.panel}" for p in empty]


def test_model_quality_alerts_fire_on_the_real_conditions(live: LivePlatform) -> None:
    """From the monitor's own windows over the platform's logs: every feature drifts (the traffic repeats a
    few applicants), the labels rank the applicants backwards (live AUC 0), the newest label is older than
    LABEL_MAX_AGE_S (1 s); then the monitor stops (stale)."""
    traffic(live.serving.bff_url, rounds=3)
    with steady_traffic(live.serving.bff_url):
        wait_for(lambda: live.query("monitor_feature_drifted == 1"), 60, "a drifted feature")
        wait_for(lambda: live.query("monitor_live_roc_auc < 0.5"), 60, "the live AUC of the backwards labels")
        # The first window may hold only some rows of the traffic; the next one has every feature.
        wait_for(
            lambda: {s["metric"]["feature"] for s in live.query("monitor_feature_psi")} == set(FEATURE_NAMES),
            60,
            "a PSI for every feature",
        )
        wait_for(
            lambda: live.query('monitor_retraining_decisions_total{decision="disabled"} > 0'),
            30,
            "a retraining decided but not started (RETRAIN_MODE=off)",
        )
        for alert in ("MlopsModelDriftHigh", "MlopsLiveAucBelowFloor", "MlopsNoRecentLabels"):
            live.wait_for_alert(alert)
    # Quiet while the monitor completes its windows; a window late under load (the condition is 3 x 10 s here)
    # may make it pending for a moment, so it must be quiet again, not quiet at one instant.
    wait_for(
        lambda: "MlopsMonitorStale" not in live.alert_states(), 60, "MlopsMonitorStale quiet while the monitor runs"
    )
    live.monitor.stop()
    live.wait_for_alert("MlopsMonitorStale", timeout_s=90)


def test_alerts_fire_on_the_real_conditions(live: LivePlatform, unique_name) -> None:
    """Provoked, not simulated: a model Triton refuses, Triton gone (503s, the BFF's check, target down)."""
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
    # The rule's ratio is over 5 minutes, which hold the earlier tests' traffic: failing requests until it
    # passes 5 %, however many answered requests the window holds.
    with steady_traffic(live.serving.bff_url):
        live.wait_for_alert("MlopsBffHighErrorRatio")
    live.wait_for_alert("MlopsBffDependencyDown")
    live.wait_for_alert("MlopsServingTargetDown")
