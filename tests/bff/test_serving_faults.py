"""The serving path under real faults, with every process real: model sync, the BFF and the log worker
as subprocesses, Triton, RabbitMQ and SeaweedFS as servers.

* Triton stopped and started again: the BFF answers 503 + Retry-After (never a 500) while it is gone,
  and serves again once model sync has put the champion back into the fresh, empty Triton.
* Inference logs under continuous /predict load, through a BFF restart (SIGTERM) and a broker cut: the
  distinct request ids in S3 are exactly those of the predictions the clients received.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import httpx
import pytest
from serving_fixtures import TRITON_TIMEOUT_S, Serving, bff_metric, faults_env, start_serving, wait_for
from tcp_proxy import TcpProxy, via_proxy

from bff.schemas import FEATURES_EXAMPLE
from devstack.components import TritonServer, app_daemon, start_triton
from devstack.processes import Daemon, free_port
from mlops_common.duckdb_s3 import connect_duckdb
from mlops_common.inference_log import InferenceLogStoreSettings

pytestmark = pytest.mark.integration

# Scheduling slack on a small shared machine: this bounds a hang, it does not measure speed.
ANSWER_MARGIN_S = 8.0


def stop_all(*daemons: Daemon | Serving | TritonServer | TcpProxy | None) -> None:
    """Stop whatever was started, in the order given, even if one stop fails."""
    errors = []
    for item in daemons:
        if item is None:
            continue
        try:
            if isinstance(item, Serving):
                item.bff.stop()
                item.model_sync.stop()
            elif isinstance(item, TcpProxy):
                item.close()
            else:
                item.stop()
        except Exception as err:  # keep stopping the rest
            errors.append(err)
    if errors:
        raise errors[0]


def features(n: int) -> dict:
    return {**FEATURES_EXAMPLE, "AMT_CREDIT": 100000.0 + n}


# -- continuous load ------------------------------------------------------------------------------
@dataclass
class Load:
    """``threads`` clients sending /predict and small /predict/batch requests until stopped.

    Collects the request ids of every prediction a client received, the HTTP answers that were not
    200, and transport errors (no answer at all) with the time they happened."""

    base_url: str
    threads: int = 2
    pause_s: float = 0.02
    ids: list[str] = field(default_factory=list)
    statuses: list[tuple[int, str, dict]] = field(default_factory=list)
    transport_errors: list[tuple[float, str]] = field(default_factory=list)
    requests: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        with httpx.Client(base_url=self.base_url, timeout=15.0) as client:
            while not self._stop.is_set():
                n += 1
                size = rng.choice([0, 0, 2, 3, 4])  # 0: the single-row endpoint
                try:
                    if size:
                        answer = client.post("/predict/batch", json=[features(n * 10 + i) for i in range(size)])
                    else:
                        answer = client.post("/predict", json=features(n))
                except httpx.TransportError as err:
                    with self._lock:
                        self.transport_errors.append((time.monotonic(), repr(err)))
                    self._stop.wait(0.2)
                    continue
                with self._lock:
                    self.requests += 1
                    if answer.status_code == 200:
                        body = answer.json()
                        rows = body["predictions"] if size else [body]
                        self.ids.extend(row["request_id"] for row in rows)
                    else:
                        self.statuses.append((answer.status_code, answer.text[:300], dict(answer.headers)))
                self._stop.wait(self.pause_s)

    def count(self) -> int:
        with self._lock:
            return len(self.ids)

    def wait_for_more(self, rows: int, timeout_s: float = 60.0) -> None:
        target = self.count() + rows
        wait_for(lambda: self.count() >= target, timeout_s, f"{rows} more successful predictions")

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)
        assert not any(w.is_alive() for w in self._workers), "a load thread did not finish"


@pytest.fixture
def cleanup() -> Iterator[list]:
    """Things to stop at the end of the test (last registered, first stopped)."""
    items: list = []
    yield items
    stop_all(*reversed(items))


# -- 1. Triton stopped and restarted --------------------------------------------------------------
@pytest.fixture
def own_triton(tmp_path: Path, stack_settings) -> Callable[[], TritonServer]:
    """Starts (and starts again, on the same ports and repository) a Triton of this test's own."""
    ports = (free_port(), free_port(), free_port())
    started: list[TritonServer] = []

    def start() -> TritonServer:
        server = start_triton(
            tmp_path / "model_repository",
            *ports,
            tmp_path / "logs" / "triton.log",
            home_dir=tmp_path / "triton-home",
            triton_venv=stack_settings.triton_venv,
            die_with_parent=True,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_triton_stopped_and_restarted(trained_platform, s3_server, unique_name, tmp_path, own_triton, cleanup):
    triton = own_triton()
    env = faults_env(
        trained_platform,
        s3_server,
        unique_name,
        tmp_path,
        MODEL_REPOSITORY=str(triton.model_repository),
        TRITON_GRPC_URL=triton.grpc_url,
        TRITON_HTTP_URL=triton.http_url,
        INFERENCE_LOGGING_ENABLED="false",
        DEPENDENCY_PROBE_INTERVAL_S="0.5",
    )
    serving = start_serving(env, tmp_path / "logs")
    cleanup.append(serving)
    triton_up = 'bff_dependency_up{dependency="triton_model"}'
    with serving.client() as client:
        assert client.post("/predict", json=FEATURES_EXAMPLE).status_code == 200
        assert bff_metric(serving.metrics_url, triton_up) == 1

        # Light background load across the whole outage: any answer but 200 or 503 is a failure.
        load = Load(serving.bff_url, threads=1, pause_s=0.1).start()
        try:
            load.wait_for_more(5)
            triton.stop()

            started = time.monotonic()
            answer = client.post("/predict", json=FEATURES_EXAMPLE)
            elapsed = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert answer.headers.get("retry-after") == "1"
            assert elapsed < TRITON_TIMEOUT_S + ANSWER_MARGIN_S, f"answered after {elapsed:.1f} s"
            batch = client.post("/predict/batch", json=[FEATURES_EXAMPLE, features(1)])
            assert batch.status_code == 503, batch.text
            assert "retry-after" in batch.headers
            # The BFF's own probe sees it; the pod stays ready (in its Service), answering fast 503s.
            wait_for(lambda: bff_metric(serving.metrics_url, triton_up) == 0, 10, "bff_dependency_up at 0")
            ready = client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json() == {"ready": True, "triton_model": False, "online_store": True}
            time.sleep(2.0)  # down for a while, under load

            # A fresh Triton on the same ports: explicit mode, nothing loaded.
            triton = own_triton()
            wait_for(lambda: client.get("/health/ready").json()["triton_model"], 120, "the model ready again")
            assert bff_metric(serving.metrics_url, triton_up) == 1
            after = client.post("/predict", json=FEATURES_EXAMPLE)
            assert after.status_code == 200, after.text
            assert after.json()["model_name"] == env["TRITON_MODEL_NAME"]
            load.wait_for_more(5)
        finally:
            load.stop()

    unexpected = [s for s in load.statuses if s[0] != 503]
    assert unexpected == [], unexpected[:5]
    assert all("retry-after" in headers for _, _, headers in load.statuses)
    assert load.transport_errors == []
    # model_sync saw Triton lose the champion and loaded it again.
    assert "loading them again" in serving.model_sync.log_path.read_text()


# -- 2. inference logs end to end -----------------------------------------------------------------
def start_log_worker(env: dict[str, str], logs: Path) -> Daemon:
    port = env["LOG_WORKER_METRICS_PORT"]
    worker_env = {**env, "BATCH_MAX_AGE_S": "0.5", "S3_RETRY_MAX_S": "1", "RECONNECT_MAX_S": "1"}
    return app_daemon(
        "log_worker",
        "log_worker",
        logs / "log_worker.log",
        env=worker_env,
        health=f"http://127.0.0.1:{port}/metrics",
        die_with_parent=True,
    ).start(timeout_s=60)


def start_bff(env: dict[str, str], logs: Path) -> Daemon:
    url = f"http://{env['BFF_HOST']}:{env['BFF_PORT']}"
    return app_daemon(
        "bff", "bff", logs / "bff.log", env=env, health=f"{url}/health/ready", die_with_parent=True
    ).start(timeout_s=120)


def wait_spool_replayed(url: str) -> None:
    """The BFF is connected to the broker and holds nothing on disk (replayed while running, not left to
    the drain at shutdown, which test_serving_shutdown.py covers)."""
    wait_for(
        lambda: (
            bff_metric(url, "bff_inference_log_broker_connected") == 1
            and bff_metric(url, "bff_inference_log_spool_backlog_bytes") == 0
        ),
        60,
        "the BFF's spool replayed",
    )


def logged_request_ids(env: dict[str, str]) -> list[str]:
    """The request id of every row of the inference-log table, read by DuckDB's Delta reader."""
    settings = InferenceLogStoreSettings(
        s3_endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_default_region=env["AWS_DEFAULT_REGION"],
        logs_bucket=env["LOGS_BUCKET"],
    )
    con = connect_duckdb(settings)
    try:
        return [
            row[0]
            for row in con.sql(f"SELECT request_id FROM delta_scan('{settings.inference_log_table_uri}')").fetchall()
        ]
    except duckdb.Error:  # no table yet
        return []


def assert_logs_complete(env: dict[str, str], load: Load) -> None:
    """Bounded wait for the exact equality: rows in the table == distinct request ids == served ids."""
    served = set(load.ids)
    assert len(served) == len(load.ids), "request ids repeat across predictions"
    found: set[str] = set()

    def complete() -> bool:
        nonlocal found
        found = set(logged_request_ids(env))
        return found >= served

    try:
        wait_for(complete, 90, "every served request id in the table")
    except TimeoutError:
        missing = served - found
        pytest.fail(
            f"{len(missing)} of {len(served)} served request ids never reached the table, e.g. {sorted(missing)[:3]}"
        )
    time.sleep(1.5)  # a late duplicate batch would show up as a second row or an id nobody was served
    rows = logged_request_ids(env)
    assert set(rows) - served == set(), f"ids in the table never served: {sorted(set(rows) - served)[:5]}"
    assert len(rows) == len(set(rows)) == len(served)


def closed_stats(bff: Daemon) -> list[str]:
    return re.findall(r"inference-log publisher closed: (\{.*\})", bff.log_path.read_text())


def test_inference_logs_complete_across_a_bff_restart(trained_platform, s3_server, unique_name, tmp_path, cleanup):
    logs = tmp_path / "logs"
    env = faults_env(
        trained_platform,
        s3_server,
        unique_name,
        tmp_path,
        LOG_PUBLISH_TIMEOUT_S="2",
        LOG_CONNECT_TIMEOUT_S="2",
        LOG_RECONNECT_MAX_S="0.5",
    )
    cleanup.append(start_log_worker(env, logs))
    serving = start_serving(env, logs)
    cleanup.append(serving)
    load = Load(serving.bff_url).start()
    try:
        load.wait_for_more(100)
        # SIGTERM mid-stream: uvicorn finishes the requests in flight, the publisher flushes its buffer.
        down_from = time.monotonic()
        serving.bff.stop()
        serving.bff = start_bff(env, logs)  # same port, same spool directory
        down_until = time.monotonic()
        load.wait_for_more(100)
        wait_spool_replayed(serving.metrics_url)
    finally:
        load.stop()
    serving.bff.stop()

    assert load.statuses == [], load.statuses[:5]
    # Only while the BFF was down may a client get no answer.
    outside = [e for e in load.transport_errors if not down_from <= e[0] <= down_until + 1.0]
    assert outside == [], outside[:5]
    stats = closed_stats(serving.bff)
    assert len(stats) == 2, stats
    assert all("'dropped': 0" in s for s in stats), stats
    assert_logs_complete(env, load)


def test_inference_logs_complete_across_a_broker_cut(
    trained_platform, s3_server, unique_name, rabbitmq_url, tmp_path, cleanup
):
    logs = tmp_path / "logs"
    parts = urlsplit(rabbitmq_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    cleanup.append(proxy)
    env = faults_env(
        trained_platform,
        s3_server,
        unique_name,
        tmp_path,
        LOG_PUBLISH_TIMEOUT_S="1",
        LOG_CONNECT_TIMEOUT_S="1",
        LOG_RECONNECT_MAX_S="0.5",
    )
    # The worker reaches RabbitMQ directly; only the BFF goes through the proxy (same vhost).
    cleanup.append(start_log_worker(env, logs))
    serving = start_serving({**env, "RABBITMQ_URL": via_proxy(rabbitmq_url, proxy)}, logs)
    cleanup.append(serving)
    url = serving.metrics_url
    load = Load(serving.bff_url).start()
    try:
        load.wait_for_more(100)
        proxy.down()
        wait_for(lambda: bff_metric(url, "bff_inference_log_broker_connected") == 0, 30, "the BFF to see the outage")
        spooled = bff_metric(url, 'bff_inference_log_records_total{outcome="spooled"}')
        load.wait_for_more(100)
        wait_for(
            lambda: bff_metric(url, 'bff_inference_log_records_total{outcome="spooled"}') > spooled,
            30,
            "records spooled during the outage",
        )
        proxy.up()
        wait_spool_replayed(url)
        load.wait_for_more(100)
    finally:
        load.stop()
    replayed = bff_metric(url, 'bff_inference_log_records_total{outcome="replayed"}')
    dropped = bff_metric(url, 'bff_inference_log_records_total{outcome="dropped"}')
    wait_spool_replayed(url)
    serving.bff.stop()

    assert load.statuses == [], load.statuses[:5]
    assert load.transport_errors == [], load.transport_errors[:5]
    assert replayed > 0
    assert dropped == 0
    assert_logs_complete(env, load)
