"""SIGTERM of a real BFF process with inference logs waiting in its spool (RabbitMQ, model sync, Triton
and the BFF all real; the BFF reaches RabbitMQ through a TCP proxy that the test cuts):

* RabbitMQ back when SIGTERM comes: the shutdown sends the backlog to the queue and leaves the spool empty;
* RabbitMQ still down: the records stay in the spool on disk, and the BFF counts and logs them.
"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import aio_pika
import pytest
from serving_fixtures import Serving, bff_metric, faults_env, start_serving, wait_for
from tcp_proxy import via_proxy

from bff.schemas import FEATURES_EXAMPLE
from bff.spool import Spool
from devstack.components import app_daemon
from devstack.processes import Daemon
from mlops_common.inference_log import InferenceLogRecord
from mlops_common.inference_log_wire import message_lines

pytestmark = pytest.mark.integration


def closed_stats(bff: Daemon) -> list[dict[str, int]]:
    """The publisher's counts, from the line it logs when it has closed (one per process that got there)."""
    return [
        ast.literal_eval(m) for m in re.findall(r"inference-log publisher closed: (\{.*\})", bff.log_path.read_text())
    ]


def queued_request_ids(rabbitmq_url: str, queue: str) -> list[str]:
    """The request ids of every record waiting in the queue, in queue order (consumed)."""

    async def consume() -> list[str]:
        connection = await aio_pika.connect(rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            source = await channel.get_queue(queue)
            ids = []
            while (message := await source.get(fail=False)) is not None:
                await message.ack()
                ids += [
                    InferenceLogRecord.from_json_bytes(line).request_id
                    for line in message_lines(message.body, message.content_type)
                ]
            return ids

    return asyncio.run(consume())


def spooled_request_ids(spool_dir: str) -> list[str]:
    spool = Spool.open_slot(Path(spool_dir))
    try:
        return [InferenceLogRecord.from_json_bytes(p).request_id for p in spool.read(1_000_000).payloads]
    finally:
        spool.close()


def predicted_ids(serving: Serving, n: int) -> list[str]:
    ids = []
    with serving.client() as client:
        for i in range(n):
            answer = client.post("/predict", json={**FEATURES_EXAMPLE, "AMT_CREDIT": 100000.0 + i})
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["request_id"])
    return ids


def test_sigterm_drains_the_spool_once_the_broker_is_back_and_counts_what_it_cannot(
    trained_platform, s3_server, unique_name, rabbitmq_url, rabbit_proxy, tmp_path
):
    logs = tmp_path / "logs"
    env = faults_env(
        trained_platform,
        s3_server,
        unique_name,
        tmp_path,
        LOG_PUBLISH_TIMEOUT_S="1",
        LOG_CONNECT_TIMEOUT_S="1",
        # Reconnect attempts back off towards a minute: once RabbitMQ is back, only the shutdown sends.
        LOG_RECONNECT_MAX_S="60",
        BFF_GRACEFUL_SHUTDOWN_S="2",
        LOG_DRAIN_TIMEOUT_S="10",  # within the 15 s Daemon.stop waits before SIGKILL
        RABBITMQ_URL=via_proxy(rabbitmq_url, rabbit_proxy),
    )
    queue = env["INFERENCE_LOG_QUEUE"]
    serving = start_serving(env, logs)  # no log worker: what reaches RabbitMQ stays in the queue
    url = serving.metrics_url
    try:

        def connected() -> bool:
            return bff_metric(url, "bff_inference_log_broker_connected") == 1

        def spooled() -> float:
            return bff_metric(url, 'bff_inference_log_records_total{outcome="spooled"}')

        def refused_attempts() -> int:
            return serving.bff.log_path.read_text().count("Connection refused")

        # 1. RabbitMQ down while predictions are answered: their records wait in the spool.
        wait_for(connected, 60, "the BFF connected to RabbitMQ (the queue declared)")
        rabbit_proxy.down()
        ids = predicted_ids(serving, 40)
        wait_for(lambda: spooled() == 40, 60, "the records spooled")
        assert bff_metric(url, "bff_inference_log_spool_backlog_bytes") > 0
        # The reconnect backoff starts at 0.1 s and doubles: after 6 refused attempts the next one is 6.4 s
        # away, so the BFF does not reconnect by itself between the proxy coming up and the SIGTERM below.
        wait_for(lambda: refused_attempts() >= 6, 60, "six refused reconnect attempts")

        # 2. RabbitMQ back and SIGTERM at once: the shutdown sends the backlog; the spool is empty.
        rabbit_proxy.up()
        serving.bff.stop()
        assert queued_request_ids(rabbitmq_url, queue) == ids
        assert spooled_request_ids(env["LOG_SPOOL_DIR"]) == []
        assert "draining 40 spooled records to the broker" in serving.bff.log_path.read_text()
        [stats] = closed_stats(serving.bff)
        assert (stats["replayed"], stats["undrained"]) == (40, 0), stats

        # 3. The same with RabbitMQ still down at SIGTERM: the records stay on disk, counted and logged.
        serving.bff = app_daemon(
            "bff", "bff", logs / "bff.log", env=env, health=f"{url}/health/ready", die_with_parent=True
        ).start(timeout_s=120)
        wait_for(connected, 60, "the restarted BFF connected to RabbitMQ")
        rabbit_proxy.down()
        more = predicted_ids(serving, 30)
        wait_for(lambda: spooled() == 30, 60, "the records spooled")
        serving.bff.stop()
        stats = closed_stats(serving.bff)[-1]
        assert (stats["spooled"], stats["undrained"], stats["dropped_spool_full"]) == (30, 30, 0), stats
        log_text = serving.bff.log_path.read_text()
        assert re.search(r"closed with 30 records \(\d+ bytes\) NOT sent to the broker", log_text), log_text[-3000:]
        assert spooled_request_ids(env["LOG_SPOOL_DIR"]) == more
        assert queued_request_ids(rabbitmq_url, queue) == []
    finally:
        serving.bff.stop()
        serving.model_sync.stop()
