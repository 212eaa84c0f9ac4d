"""The inference-log pipeline under faults: publisher -> RabbitMQ -> log worker(s) -> Delta table in S3.

Every scenario runs under continuous submission and ends with the exact equality the issue asks for,
read by DuckDB's Delta reader: rows in the table == distinct request ids == ids submitted (none lost,
none invented, none twice), while ``submit`` never raised or blocked (the producer task would have
failed) and nothing was dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime

import aio_pika
import msgspec
import numpy as np
import pytest
from log_pipeline import (
    LogSetup,
    Producer,
    eventually,
    make_record,
    metric,
    running_worker,
    started_publisher,
    table_has_exactly,
    table_request_ids,
)
from tcp_proxy import TcpProxy, via_proxy

from log_worker import dlq
from log_worker.worker import ERROR_HEADER, ERROR_KIND_HEADER
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import MESSAGE_CONTENT_TYPE
from mlops_common.inference_log_wire import BLOCKS_CONTENT_TYPE, WireBlock, log_block
from mlops_common.rabbit import declare_topology
from mlops_common.rollout import Role
from mlops_common.settings import REPO_ROOT

pytestmark = pytest.mark.integration


def assert_accounted(stats, submitted: set[str]) -> None:
    """Every record left the publisher's memory to the broker or the spool, and the spool is empty."""
    assert stats.dropped == 0
    assert stats.enqueued == len(submitted)
    assert stats.confirmed + stats.spooled == stats.enqueued
    assert stats.replayed == stats.spooled


async def test_broker_stopped_and_restarted_mid_stream(log_setup: LogSetup, rabbit_proxy: TcpProxy):
    # Publisher and worker both reach the broker through the proxy: both lose it.
    url = via_proxy(log_setup.rabbitmq_url, rabbit_proxy)
    async with (
        running_worker(log_setup.worker_settings(rabbitmq_url=url)),
        started_publisher(log_setup.publisher_settings(rabbitmq_url=url)) as publisher,
    ):
        producer = Producer(publisher).start()
        await eventually(lambda: publisher.stats.confirmed >= 300, what="records confirmed before the outage")

        rabbit_proxy.down()
        spooled = publisher.stats.spooled
        await eventually(lambda: publisher.stats.spooled >= spooled + 300, what="records spooled during the outage")
        assert not publisher.ready

        rabbit_proxy.up()
        await eventually(lambda: publisher.ready, what="the publisher to reconnect")
        confirmed = publisher.stats.confirmed
        await eventually(lambda: publisher.stats.confirmed >= confirmed + 300, what="fresh records after the outage")
        submitted = await producer.stop()
        await eventually(lambda: publisher.spool_backlog_bytes == 0, what="the spool to be replayed")

        await eventually(lambda: table_has_exactly(log_setup, submitted), what="every submitted id in the table")
    assert_accounted(publisher.stats, submitted)
    assert publisher.stats.replayed > 0


async def test_broker_stalled_mid_stream(log_setup: LogSetup, rabbit_proxy: TcpProxy):
    # A hung broker (bytes go nowhere) is as good as a dead one: unconfirmed records go to the spool.
    url = via_proxy(log_setup.rabbitmq_url, rabbit_proxy)
    async with (
        running_worker(log_setup.worker_settings()),
        started_publisher(log_setup.publisher_settings(rabbitmq_url=url, log_publish_timeout_s=0.5)) as publisher,
    ):
        producer = Producer(publisher).start()
        await eventually(lambda: publisher.stats.confirmed >= 300, what="records confirmed before the stall")

        rabbit_proxy.stall()
        spooled = publisher.stats.spooled
        await eventually(lambda: publisher.stats.spooled >= spooled + 300, what="records spooled while stalled")

        rabbit_proxy.up()
        await eventually(lambda: publisher.ready, what="the publisher to reconnect")
        submitted = await producer.stop()
        await eventually(lambda: publisher.spool_backlog_bytes == 0, what="the spool to be replayed")
        await eventually(lambda: table_has_exactly(log_setup, submitted), what="every submitted id in the table")
    assert_accounted(publisher.stats, submitted)


async def test_s3_down_for_a_while_under_the_worker(log_setup: LogSetup, s3_proxy: TcpProxy):
    s3_url = f"http://127.0.0.1:{s3_proxy.port}"
    failures = metric("log_worker_write_failures_total")
    async with (
        running_worker(log_setup.worker_settings(s3_endpoint_url=s3_url)),
        started_publisher(log_setup.publisher_settings()) as publisher,
    ):
        producer = Producer(publisher).start()
        await eventually(
            lambda: metric("log_worker_records_written_total") > 0 and publisher.stats.confirmed >= 300,
            what="batches written before the outage",
        )

        s3_proxy.down()
        await eventually(lambda: metric("log_worker_write_failures_total") > failures, what="a failed S3 write")
        await producer.wait_for_more(500)

        s3_proxy.up()
        submitted = await producer.stop()
        await eventually(lambda: table_has_exactly(log_setup, submitted), what="every submitted id in the table")
    assert_accounted(publisher.stats, submitted)
    assert publisher.stats.spooled == 0


async def test_two_workers_writing_at_once(log_setup: LogSetup):
    # Both consume the same queue and commit to the same table partitions concurrently; the ones that
    # lose a commit race merge again. Small batches make the races frequent.
    settings = log_setup.worker_settings(batch_max_records=50, batch_max_age_s=0.05)
    async with (
        running_worker(settings),
        running_worker(settings),
        started_publisher(log_setup.publisher_settings(log_message_max_records=10)) as publisher,
    ):
        producer = Producer(publisher, batch=10).start()
        await producer.wait_for_more(3000)
        submitted = await producer.stop()
        # Commit races cost retries (with random backoff): a bound on a hang, not a speed target.
        await eventually(
            lambda: table_has_exactly(log_setup, submitted), within=120, what="every submitted id in the table"
        )
    assert_accounted(publisher.stats, submitted)


METRIC_NAMES = (
    "log_worker_messages_consumed_total",
    "log_worker_batches_written_total",
    "log_worker_write_failures_total",
    "log_worker_dead_lettered_total",
    "log_worker_batch_write_seconds_bucket",
)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def table_ids(setup: LogSetup) -> list[str]:
    return await asyncio.to_thread(table_request_ids, setup)


def start_worker_process(env: dict[str, str], log_path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "log_worker"],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO_ROOT / p) for p in ("services", "data")), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def test_worker_killed_with_sigkill_mid_batch(log_setup: LogSetup, s3_proxy: TcpProxy, tmp_path):
    env = log_setup.worker_env(s3_endpoint_url=f"http://127.0.0.1:{s3_proxy.port}")
    log_path = tmp_path / "worker.log"
    first = start_worker_process(env, log_path)
    second = None
    try:
        async with started_publisher(log_setup.publisher_settings()) as publisher:
            producer = Producer(publisher).start()
            await eventually(lambda: publisher.stats.confirmed >= 300, what="records confirmed")
            await eventually(lambda: table_ids(log_setup), what="the first batches in the table")

            # Hold the worker's next S3 upload half-way, then kill it while it holds unacked messages.
            s3_proxy.stall()
            await eventually(lambda: s3_proxy.held_bytes > 0, what="the worker to start writing a batch")
            first.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
            s3_proxy.down()
            s3_proxy.up()

            second = start_worker_process(env, log_path)
            await producer.wait_for_more(300)
            submitted = await producer.stop()
            await eventually(lambda: table_has_exactly(log_setup, submitted), what="every submitted id in the table")
        assert_accounted(publisher.stats, submitted)

        metrics = await asyncio.to_thread(scrape, int(env["LOG_WORKER_METRICS_PORT"]))
        for name in METRIC_NAMES:
            assert f"\n{name}" in metrics, name
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 30) == 0, log_path.read_text()[-3000:]
        print(log_path.read_text())
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


async def test_publisher_closed_with_records_buffered(log_setup: LogSetup):
    # What the BFF does on SIGTERM: everything still in memory reaches the broker before close returns.
    async with running_worker(log_setup.worker_settings()):
        async with started_publisher(log_setup.publisher_settings()) as publisher:
            records = [make_record() for _ in range(3000)]
            for record in records:
                publisher.submit(record)
            assert publisher.buffered == 3000
            await publisher.close(10.0)
        submitted = {r.request_id for r in records}
        assert publisher.stats.confirmed == 3000
        await eventually(lambda: table_has_exactly(log_setup, submitted), what="every submitted id in the table")
    assert_accounted(publisher.stats, submitted)


async def test_publisher_closed_while_broker_hangs_then_restarted(log_setup: LogSetup, rabbit_proxy: TcpProxy):
    # SIGTERM while the broker does not confirm: close spools within its timeout; the next process
    # (same spool directory) replays.
    url = via_proxy(log_setup.rabbitmq_url, rabbit_proxy)
    records = [make_record() for _ in range(3000)]
    async with started_publisher(log_setup.publisher_settings(rabbitmq_url=url)) as first:
        await eventually(lambda: first.ready, what="the publisher to connect")
        rabbit_proxy.stall()
        for record in records:
            first.submit(record)
        await first.close(1.0)
    assert first.stats.spooled == 3000
    assert first.stats.confirmed == 0
    rabbit_proxy.down()  # what it held never reaches the broker
    rabbit_proxy.up()

    async with (
        running_worker(log_setup.worker_settings()),
        started_publisher(log_setup.publisher_settings(rabbitmq_url=url)) as second,
    ):
        await eventually(lambda: second.stats.replayed == 3000, what="the spool to be replayed")
        await eventually(
            lambda: table_has_exactly(log_setup, {r.request_id for r in records}), what="all ids in the table"
        )
    assert second.stats.dropped == 0
    assert second.spool_backlog_bytes == 0


async def test_poison_messages_end_in_the_dead_letter_queue(log_setup: LogSetup):
    valid_in_mixed = make_record("mixed-valid")
    bad_version = json.loads(make_record("bad-version").to_json_bytes())
    bad_version["schema_version"] = 99
    poison = [
        b"not json at all",
        b'{"schema_version": 1, "request_id": "missing-fields"}',
        json.dumps(bad_version).encode(),
        valid_in_mixed.to_json_bytes() + b"\n{broken",
        b"",
    ]
    expected_dead = [poison[0], poison[1], poison[2], b"{broken", b""]
    dead_before = metric("log_worker_dead_lettered_total", reason="invalid")

    async with (
        running_worker(log_setup.worker_settings()),
        started_publisher(log_setup.publisher_settings()) as publisher,
    ):
        producer = Producer(publisher).start()
        await eventually(lambda: publisher.stats.confirmed >= 200, what="records confirmed")
        connection = await aio_pika.connect(log_setup.rabbitmq_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(log_setup.topology.exchange)
            for body in poison:
                message = aio_pika.Message(body, content_type=MESSAGE_CONTENT_TYPE)
                await exchange.publish(message, log_setup.topology.routing_key)
        await producer.wait_for_more(300)
        submitted = await producer.stop()
        await eventually(
            lambda: table_has_exactly(log_setup, submitted | {valid_in_mixed.request_id}),
            what="all valid ids in the table",
        )
        await eventually(
            lambda: metric("log_worker_dead_lettered_total", reason="invalid") >= dead_before + 5, what="dead-lettering"
        )
    assert_accounted(publisher.stats, submitted)

    connection = await aio_pika.connect(log_setup.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.get_queue(log_setup.topology.dead_letter_queue)
        dead = []
        while (message := await dlq.get(fail=False)) is not None:
            dead.append(message)
            await message.ack()
    assert sorted(m.body for m in dead) == sorted(expected_dead)
    reasons = {m.body: m.headers[ERROR_HEADER] for m in dead}
    assert "empty message" in reasons[b""]
    assert "schema_version" in reasons[poison[2]]
    assert "timestamp" in reasons[poison[1]]
    assert all(m.headers["x-original-routing-key"] == log_setup.topology.routing_key for m in dead)


async def test_a_bad_block_is_dead_lettered_and_the_records_beside_it_are_written(log_setup: LogSetup, monkeypatch):
    """A message of blocks (the BFF's form) holding a good block, a block with one invalid row and a
    block that does not decode: the worker writes every valid record, dead-letters the invalid row alone
    as a JSON line and the undecodable block whole, and a replay from the dead-letter queue brings each
    back (the row as a record, the block as blocks) without writing anything twice."""
    ids = [f"blk-{i}" for i in range(6)]

    def block(request_ids: list[str]) -> WireBlock:
        n = len(request_ids)
        return log_block(
            request_ids=request_ids,
            timestamp=datetime.now(UTC),
            entity_ids=[None] * n,
            features=np.ones((n, len(FEATURE_NAMES)), dtype=np.float32),
            store_features=[[]] * n,
            model_name="credit_default",
            model_versions=["1"] * n,
            probabilities=np.full(n, 0.25),
            decisions=["approve"] * n,
            latency_ms=1.0,
            roles=[Role.CHAMPION] * n,
        )

    with_bad_row = block(ids[3:])
    with_bad_row.probabilities = np.array([0.5, 1.5, 0.5]).tobytes()  # ids[4]: a probability above 1
    undecodable = msgspec.msgpack.encode(msgspec.structs.replace(block(["never"]), roles=["boss"]))
    encoded = [msgspec.msgpack.encode(b) for b in (block(ids[:3]), with_bad_row)]
    body = b"\x93" + encoded[0] + encoded[1] + undecodable  # a msgpack array of the three blocks
    expected = set(ids) - {ids[4]}
    async with running_worker(log_setup.worker_settings()):
        connection = await aio_pika.connect(log_setup.rabbitmq_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange, _, _ = await declare_topology(channel, log_setup.topology)
            await exchange.publish(
                aio_pika.Message(body, content_type=BLOCKS_CONTENT_TYPE), log_setup.topology.routing_key
            )
        await eventually(lambda: table_has_exactly(log_setup, expected), what="the valid records in the table")
        await eventually(lambda: dlq_holds(log_setup, 2), what="the two rejects in the DLQ")
        connection = await aio_pika.connect(log_setup.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(log_setup.topology.dead_letter_queue)
            dead = [await queue.get(no_ack=False) for _ in range(2)]
            by_type = {m.content_type: m for m in dead}
            assert set(by_type) == {MESSAGE_CONTENT_TYPE, BLOCKS_CONTENT_TYPE}
            assert json.loads(by_type[MESSAGE_CONTENT_TYPE].body)["request_id"] == ids[4]
            assert "probability" in by_type[MESSAGE_CONTENT_TYPE].headers[ERROR_HEADER]
            assert by_type[BLOCKS_CONTENT_TYPE].body == b"\x91" + undecodable
            assert "$.roles[0]" in by_type[BLOCKS_CONTENT_TYPE].headers[ERROR_HEADER]
            # Closing the channel returns both to the queue.
        for key, value in log_setup.worker_env().items():
            monkeypatch.setenv(key, value)
        assert await asyncio.to_thread(dlq.main, ["replay"]) == 0
        # Both are refused again: back in the DLQ, nothing written twice.
        await eventually(lambda: dlq_holds(log_setup, 2), what="the rejects back in the DLQ")
        assert await table_has_exactly(log_setup, expected)


async def test_dead_letter_tool_lists_replays_written_records_once_and_purges(log_setup: LogSetup, monkeypatch, capsys):
    written = [make_record() for _ in range(20)]
    async with running_worker(log_setup.worker_settings()):
        async with started_publisher(log_setup.publisher_settings()) as publisher:
            for record in written:
                publisher.submit(record)
        await eventually(lambda: table_has_exactly(log_setup, {r.request_id for r in written}), what="the records")

        # Copies of records already in the table land in the DLQ (as after a fix that came too late),
        # with one record that is still invalid.
        connection = await aio_pika.connect(log_setup.rabbitmq_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            dlx = await channel.get_exchange(log_setup.topology.dead_letter_exchange)
            for body, kind in [*((r.to_json_bytes(), "unwritable") for r in written[:5]), (b"{broken", "invalid")]:
                headers = {ERROR_HEADER: f"test: {kind}", ERROR_KIND_HEADER: kind}
                await dlx.publish(aio_pika.Message(body, headers=headers), log_setup.topology.dead_letter_queue)
        for key, value in log_setup.worker_env().items():
            monkeypatch.setenv(key, value)

        assert await asyncio.to_thread(dlq.main, ["list", "--limit", "2"]) == 0
        out = capsys.readouterr().out
        assert f"6 dead-lettered records in {log_setup.topology.dead_letter_queue}" in out
        assert "  invalid: 1\n  unwritable: 5" in out
        assert out.count("- [") == 2

        again = metric("log_worker_records_already_written_total")
        assert await asyncio.to_thread(dlq.main, ["replay"]) == 0
        assert "replayed 6 records" in capsys.readouterr().out
        await eventually(lambda: metric("log_worker_records_already_written_total") >= again + 5, what="the replay")
        # The broken record is back in the DLQ; the five copies are still one row each.
        await eventually(lambda: dlq_holds(log_setup, 1), what="the invalid record back in the DLQ")
        assert await table_has_exactly(log_setup, {r.request_id for r in written})

    with pytest.raises(SystemExit):
        dlq.main(["purge"])
    assert "--yes" in capsys.readouterr().err
    assert await asyncio.to_thread(dlq.main, ["purge", "--yes"]) == 0
    assert "purged 1 records" in capsys.readouterr().out


async def dlq_holds(setup: LogSetup, count: int) -> bool:
    connection = await aio_pika.connect(setup.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(setup.topology.dead_letter_queue, passive=True)
        return queue.declaration_result.message_count == count
