"""`python -m bff` with several worker processes on the real stack: one port, a spool slot each, and
one /metrics that adds the workers up."""

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving_fixtures import bff_metric, bff_metrics_url, wait_for

from bff.schemas import FEATURES_EXAMPLE
from devstack.components import app_daemon
from devstack.processes import free_port

pytestmark = pytest.mark.integration

REQUESTS = 60


def test_two_workers_share_the_port_and_their_metrics_are_summed(serving, tmp_path):
    # A second BFF beside the module's one, on the same Triton and store.
    spool = tmp_path / "spool"
    env = {
        **serving.env,
        "BFF_PORT": str(free_port()),
        "BFF_METRICS_PORT": str(free_port()),
        "BFF_WORKERS": "2",
        "LOG_SPOOL_DIR": str(spool),
    }
    url = f"http://{env['BFF_HOST']}:{env['BFF_PORT']}"
    log = tmp_path / "bff.log"
    daemon = app_daemon("bff", "bff", log, env=env, health=f"{url}/health/ready", die_with_parent=True)
    daemon.start(timeout_s=120)
    try:
        # Ready means one worker answered; each worker holds a spool slot once its start-up is done.
        wait_for(lambda: {p.name for p in spool.iterdir()} >= {"slot-0", "slot-1"}, 60, "both workers started")
        worker_pids = set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))
        assert len(worker_pids) == 2, log.read_text()

        def predict(_: int) -> int:
            # A connection of its own each: the kernel hands each to whichever worker accepts first.
            return httpx.post(f"{url}/predict", json=FEATURES_EXAMPLE, timeout=10).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(predict, range(REQUESTS)))
        assert statuses == [200] * REQUESTS
        metrics = bff_metrics_url(env)
        assert bff_metric(metrics, 'bff_requests_total{route="/predict",status="200"}') == REQUESTS
        assert bff_metric(metrics, "bff_rows_predicted_total") == REQUESTS
        assert bff_metric(metrics, "bff_in_flight_requests") == 0
        # The lowest of the workers: both are connected to RabbitMQ.
        assert bff_metric(metrics, "bff_inference_log_broker_connected") == 1
        assert "feast_" not in httpx.get(metrics, timeout=5).text
    finally:
        assert daemon.stop()
