"""Model sync's metrics: load outcomes exist at 0 from start-up, and `python -m model_sync` serves its
own registry on MODEL_SYNC_METRICS_PORT: no Feast metrics even when feast is imported in the process."""

import re
import subprocess
import sys

import httpx
from serving_fixtures import wait_for

from devstack.components import app_daemon, app_environment
from devstack.processes import free_port
from model_sync.sync import LOAD_OUTCOMES

# `python -m model_sync` in a process that imported feast.metrics first, which registers Feast's
# feature-server metrics in prometheus_client's default registry.
MODEL_SYNC_AFTER_FEAST = """
import runpy, sys
import feast.metrics
from prometheus_client import REGISTRY, generate_latest
assert b"feast_feature_server" in generate_latest(REGISTRY), "feast no longer registers its metrics"
sys.argv = ["model_sync"]
runpy.run_module("model_sync", run_name="__main__", alter_sys=True)
"""


def test_load_outcomes_exist_at_zero_from_start_up():
    # A fresh interpreter: in this one, other tests may already have synced models.
    script = (
        "from model_sync.sync import LOAD_OUTCOMES, REGISTRY; "
        "print([REGISTRY.get_sample_value('model_sync_loads_total', {'outcome': o}) for o in LOAD_OUTCOMES], "
        "REGISTRY.get_sample_value('model_sync_check_errors_total'))"
    )
    env = app_environment()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.split() == ["[0.0,", "0.0]", "0.0"]
    assert len(LOAD_OUTCOMES) == 2


def check_errors(exposition: str) -> float:
    match = re.search(r"^model_sync_check_errors_total (\S+)$", exposition, flags=re.MULTILINE)
    return float(match[1]) if match else 0.0


def test_metrics_endpoint_serves_no_feast_metrics(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = {
        "MODEL_SYNC_METRICS_PORT": str(port),
        # Nothing listens there: every sync check fails, and the loop goes on.
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "TRITON_GRPC_URL": f"127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MODEL_REPOSITORY": str(tmp_path / "repository"),
        "SYNC_INTERVAL_S": "0.2",
    }
    log = tmp_path / "model_sync.log"
    command = [sys.executable, "-c", MODEL_SYNC_AFTER_FEAST]
    daemon = app_daemon("model_sync", command, log, env=env, health=url, die_with_parent=True).start(timeout_s=120)
    try:
        assert "feast_" not in httpx.get(url).text
        # The loop runs and counts its failures; no load was tried, yet the failure series is there.
        wait_for(lambda: check_errors(httpx.get(url).text) >= 1, 60, "a failed sync check")
        exposition = httpx.get(url).text
    finally:
        daemon.stop()
    assert 'model_sync_loads_total{outcome="failure"} 0.0' in exposition, log.read_text()[-3000:]
    assert "feast_" not in exposition
