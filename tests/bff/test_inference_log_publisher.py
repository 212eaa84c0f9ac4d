"""The BFF's inference-log publisher: the request path never blocks or raises, what the broker cannot
take goes to the spool in order, a later process replays it, and the counters add up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import aio_pika
import pytest

from bff.inference_log import OUTCOMES, InferenceLogPublisher, PublisherState
from bff.metrics import REGISTRY
from bff.settings import Settings
from bff.spool import Spool
from devstack.processes import free_port
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import MESSAGE_CONTENT_TYPE, InferenceLogRecord, split_message
from mlops_common.rabbit import InferenceLogTopology

_ids = count()


def record() -> InferenceLogRecord:
    n = next(_ids)
    return InferenceLogRecord(
        request_id=f"pub-{n}",
        timestamp=datetime.now(UTC),
        entity_id=n,
        features=dict.fromkeys(FEATURE_NAMES, 1.0),
        model_name="credit_default",
        model_version="1",
        probability=0.5,
        decision="reject",
        latency_ms=1.0,
    )


def settings(spool_dir: Path, *, url: str | None = None, **overrides) -> Settings:
    values = {
        # Nothing listens on a fresh free port: the broker is down.
        "rabbitmq_url": url or f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "inference_log_exchange": "unused",
        "inference_log_queue": "unused",
        "log_spool_dir": str(spool_dir),
        "log_connect_timeout_s": 1.0,
        "log_reconnect_max_s": 0.2,
    }
    return Settings(**{**values, **overrides})


def spooled_ids(spool_dir: Path) -> list[str]:
    spool = Spool.open_slot(spool_dir)
    try:
        return [InferenceLogRecord.from_json_bytes(p).request_id for p in spool.read(1_000_000).payloads]
    finally:
        spool.close()


async def wait_for(predicate: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_broker_down_records_are_spooled_in_submission_order(tmp_path):
    publisher = InferenceLogPublisher(settings(tmp_path))
    await publisher.start()
    submitted = []
    for _ in range(50):
        for _ in range(10):
            r = record()
            publisher.submit(r)
            submitted.append(r.request_id)
        await asyncio.sleep(0.001)
    await wait_for(lambda: publisher.stats.spooled == 500, "the records to reach the spool")
    assert publisher.state is PublisherState.DISCONNECTED
    assert not publisher.ready
    await publisher.close(1.0)
    assert publisher.state is PublisherState.CLOSED
    assert (publisher.stats.enqueued, publisher.stats.spooled, publisher.stats.dropped) == (500, 500, 0)
    assert spooled_ids(tmp_path) == submitted


async def test_a_full_buffer_overflows_to_the_spool_without_waiting(tmp_path):
    publisher = InferenceLogPublisher(settings(tmp_path, log_buffer_size=10))
    await publisher.start()
    # No await between submissions: the background task cannot run, so only submit itself acts.
    records = [record() for _ in range(25)]
    for r in records:
        publisher.submit(r)
    assert publisher.buffered == 10
    assert publisher.stats.spooled == 15
    await publisher.close(1.0)
    assert publisher.stats.spooled == 25
    # Overflow first (it was written first), then the buffer, flushed on close.
    assert spooled_ids(tmp_path) == [r.request_id for r in records[10:] + records[:10]]


async def test_a_failing_disk_drops_loudly_and_submit_still_does_not_raise(tmp_path, monkeypatch, caplog):
    publisher = InferenceLogPublisher(settings(tmp_path, log_buffer_size=1))
    await publisher.start()

    def disk_full(self, payloads):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Spool, "append", disk_full)
    dropped = REGISTRY.get_sample_value("bff_inference_log_records_total", {"outcome": "dropped"})
    with caplog.at_level(logging.ERROR, logger="bff.inference_log"):
        for _ in range(3):
            publisher.submit(record())
    assert publisher.stats.dropped == 2
    assert REGISTRY.get_sample_value("bff_inference_log_records_total", {"outcome": "dropped"}) == dropped + 2
    assert any("DROPPED" in r.getMessage() and r.exc_info for r in caplog.records)
    monkeypatch.undo()
    await publisher.close(1.0)
    assert publisher.stats.enqueued == publisher.stats.spooled + publisher.stats.dropped == 3


async def test_counter_has_every_outcome(tmp_path):
    publisher = InferenceLogPublisher(settings(tmp_path))
    for outcome in OUTCOMES:
        assert REGISTRY.get_sample_value("bff_inference_log_records_total", {"outcome": outcome}) is not None
    before = REGISTRY.get_sample_value("bff_inference_log_records_total", {"outcome": "enqueued"})
    await publisher.start()
    publisher.submit(record())
    await publisher.close(1.0)
    assert REGISTRY.get_sample_value("bff_inference_log_records_total", {"outcome": "enqueued"}) == before + 1


# -- against the real broker ------------------------------------------------------------------------------
@pytest.fixture
async def topology(rabbitmq_url: str, unique_name) -> AsyncIterator[InferenceLogTopology]:
    names = InferenceLogTopology(unique_name("inference-logs"), unique_name("inference-logs"))
    yield names
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        for queue in (names.queue, names.dead_letter_queue):
            await channel.queue_delete(queue)
        for exchange in (names.exchange, names.dead_letter_exchange):
            await channel.exchange_delete(exchange)


def broker_settings(spool_dir: Path, url: str, names: InferenceLogTopology, **overrides) -> Settings:
    return settings(
        spool_dir, url=url, inference_log_exchange=names.exchange, inference_log_queue=names.queue, **overrides
    )


async def queued_messages(url: str, names: InferenceLogTopology, queue: str | None = None) -> list:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue or names.queue)
        messages = []
        while (message := await source.get(fail=False)) is not None:
            await message.ack()
            messages.append(message)
    return messages


@pytest.mark.integration
async def test_records_are_confirmed_as_persistent_json_lines_messages(tmp_path, rabbitmq_url, topology):
    publisher = InferenceLogPublisher(broker_settings(tmp_path, rabbitmq_url, topology, log_message_max_records=40))
    await publisher.start()
    records = [record() for _ in range(250)]
    for r in records:
        publisher.submit(r)
    await wait_for(lambda: publisher.stats.confirmed == 250, "the broker's confirms")
    assert publisher.ready
    await publisher.close(5.0)
    assert (publisher.stats.spooled, publisher.stats.dropped) == (0, 0)

    messages = await queued_messages(rabbitmq_url, topology)
    lines = [line for m in messages for line in split_message(m.body)]
    assert [InferenceLogRecord.from_json_bytes(line) for line in lines] == records
    assert all(len(split_message(m.body)) <= 40 for m in messages)
    assert {(m.delivery_mode, m.content_type) for m in messages} == {
        (aio_pika.DeliveryMode.PERSISTENT, MESSAGE_CONTENT_TYPE)
    }


@pytest.mark.integration
async def test_a_new_process_replays_the_spool_in_order(tmp_path, rabbitmq_url, topology):
    offline = InferenceLogPublisher(settings(tmp_path))
    await offline.start()
    records = [record() for _ in range(300)]
    for r in records:
        offline.submit(r)
    await offline.close(1.0)
    assert offline.stats.spooled == 300

    online = InferenceLogPublisher(broker_settings(tmp_path, rabbitmq_url, topology))
    await online.start()
    await wait_for(lambda: online.stats.replayed == 300, "the replay")
    assert online.spool_backlog_bytes == 0
    await online.close(5.0)
    lines = [line for m in await queued_messages(rabbitmq_url, topology) for line in split_message(m.body)]
    assert [InferenceLogRecord.from_json_bytes(line).request_id for line in lines] == [r.request_id for r in records]


@pytest.mark.integration
async def test_rejected_messages_are_dead_lettered_by_the_broker(tmp_path, rabbitmq_url, topology):
    publisher = InferenceLogPublisher(broker_settings(tmp_path, rabbitmq_url, topology))
    await publisher.start()
    r = record()
    publisher.submit(r)
    await wait_for(lambda: publisher.stats.confirmed == 1, "the confirm")
    await publisher.close(5.0)

    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.queue)
        message = await queue.get()
        await message.reject(requeue=False)
    deadline = time.monotonic() + 20
    while not (dead := await queued_messages(rabbitmq_url, topology, topology.dead_letter_queue)):
        assert time.monotonic() < deadline, "the rejected message never reached the dead-letter queue"
        await asyncio.sleep(0.05)
    assert [m.body for m in dead] == [r.to_json_bytes()]
    assert dead[0].headers["x-death"][0]["reason"] == "rejected"
