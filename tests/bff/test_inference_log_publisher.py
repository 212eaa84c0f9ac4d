"""The BFF's inference-log publisher: the request path never blocks or raises, what the broker cannot
take goes to the spool in order, a later process replays it, a full spool drops and counts, closing
drains the spool to a reachable broker and counts what it could not send, and the counters add up."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import aio_pika
import numpy as np
import pytest
from pydantic import ValidationError
from tcp_proxy import via_proxy

import bff.inference_log as inference_log
from bff.inference_log import OUTCOMES, InferenceLogPublisher, PublisherState
from bff.metrics import REGISTRY
from bff.settings import Settings
from bff.spool import Spool
from devstack.processes import free_port
from log_worker.settings import Settings as LogWorkerSettings
from mlops_common.decisions import decide
from mlops_common.features import FEATURE_NAMES, MAX_ENTITY_ID
from mlops_common.inference_log import InferenceLogRecord, encode_message
from mlops_common.inference_log_wire import (
    BLOCKS_CONTENT_TYPE,
    WireBlock,
    block_lines,
    encode_blocks_message,
    log_block,
    message_lines,
)
from mlops_common.rabbit import InferenceLogTopology
from mlops_common.rollout import Role
from mlops_common.settings import REPO_ROOT

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


def spooled_lines(spool_dir: Path) -> list[bytes]:
    spool = Spool.open_slot(spool_dir)
    try:
        return spool.read(1_000_000).payloads
    finally:
        spool.close()


def spooled_ids(spool_dir: Path) -> list[str]:
    return [InferenceLogRecord.from_json_bytes(line).request_id for line in spooled_lines(spool_dir)]


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
    # It keeps retrying (every 0.2 s here), so it is between attempts or in one.
    assert publisher.state in (PublisherState.DISCONNECTED, PublisherState.CONNECTING)
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


def records_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("bff_inference_log_records_total", {"outcome": outcome}) or 0.0


def undrained_total() -> float:
    return REGISTRY.get_sample_value("bff_inference_log_shutdown_undrained_records_total") or 0.0


def spool_files_bytes(spool_dir: Path) -> int:
    return sum(p.stat().st_size for p in spool_dir.rglob("*.seg"))


def test_a_fresh_process_exports_the_new_series_at_zero():
    # rate() and increase() only see a change from a sample that exists: the series of the spool-full
    # drops and of the undrained records must be there, at 0, before the first event.
    code = (
        "from bff.inference_log import REGISTRY; "
        "print(REGISTRY.get_sample_value('bff_inference_log_records_total', {'outcome': 'dropped_spool_full'}), "
        "REGISTRY.get_sample_value('bff_inference_log_shutdown_undrained_records_total'))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "services")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["0.0", "0.0"]


async def test_a_full_spool_drops_the_newest_records_counts_and_logs_them_rate_limited(tmp_path, monkeypatch, caplog):
    # Lines at most once an hour: apart from the first drop, only close logs the count it holds.
    monkeypatch.setattr(inference_log, "SPOOL_FULL_LOG_INTERVAL_S", 3600.0)
    limit = 16 * 1024
    publisher = InferenceLogPublisher(
        settings(tmp_path, log_buffer_size=1, log_spool_max_bytes=limit, log_spool_segment_bytes=4096)
    )
    await publisher.start()
    before = {outcome: records_total(outcome) for outcome in OUTCOMES}
    records = [record() for _ in range(400)]
    with caplog.at_level(logging.INFO, logger="bff.inference_log"):
        # No await: the broker is down and the buffer holds one, so submit spools every other record itself.
        for r in records:
            publisher.submit(r)
        await publisher.close(1.0)
    stats = publisher.stats
    assert 0 < stats.spooled < 400
    assert stats.dropped_spool_full == 400 - stats.spooled
    assert stats.dropped == stats.confirmed == 0
    assert stats.enqueued == stats.confirmed + stats.spooled + stats.dropped + stats.dropped_spool_full == 400
    after = {outcome: records_total(outcome) for outcome in OUTCOMES}
    assert after["dropped_spool_full"] - before["dropped_spool_full"] == stats.dropped_spool_full
    assert after["spooled"] - before["spooled"] == stats.spooled
    # The real files stay under the limit, and hold the oldest records, in order: the newest were dropped
    # (the first record waited in the buffer, and found the spool full when close flushed it).
    assert spool_files_bytes(tmp_path) <= limit
    assert spooled_ids(tmp_path) == [r.request_id for r in records[1 : stats.spooled + 1]]
    # Logged, not once per record: the first drop, then the rest of the count when the publisher closed.
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert [r.levelno for r in full] == [logging.ERROR, logging.ERROR], [r.getMessage() for r in full]
    counts = [int(re.search(r": (\d+) records DROPPED", r.getMessage())[1]) for r in full]
    assert counts[0] == 1
    assert sum(counts) == stats.dropped_spool_full
    # What stays on disk is counted as undrained (the broker never came back).
    assert stats.undrained == stats.spooled


@pytest.mark.parametrize("field", ["log_spool_max_bytes", "log_drain_timeout_s"])
def test_the_spool_limit_and_the_drain_budget_must_be_positive(tmp_path, field):
    with pytest.raises(ValidationError, match=field):
        settings(tmp_path, **{field: 0})


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
async def test_records_are_confirmed_as_persistent_messages_of_blocks(tmp_path, rabbitmq_url, topology):
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
    lines = [line for m in messages for line in message_lines(m.body, m.content_type)]
    assert [InferenceLogRecord.from_json_bytes(line) for line in lines] == records
    assert all(len(message_lines(m.body, m.content_type)) <= 40 for m in messages)
    assert {(m.delivery_mode, m.content_type) for m in messages} == {
        (aio_pika.DeliveryMode.PERSISTENT, BLOCKS_CONTENT_TYPE)
    }


@pytest.mark.integration
async def test_a_full_message_is_published_without_waiting_out_the_linger(tmp_path, rabbitmq_url, topology):
    """Batches arriving faster than the linger: each full message goes at once, so the buffer never fills
    and nothing is spooled (with a fixed wait, the records past LOG_BUFFER_SIZE went to disk)."""
    publisher = InferenceLogPublisher(
        broker_settings(
            tmp_path,
            rabbitmq_url,
            topology,
            log_message_max_records=100,
            log_publish_linger_s=60.0,
            log_buffer_size=300,
        )
    )
    await publisher.start()
    await wait_for(lambda: publisher.ready, "the connection")
    publisher.submit(record())
    await asyncio.sleep(0.1)  # the publisher lingers for a fuller message now
    for _ in range(10):
        for _ in range(100):
            publisher.submit(record())
        await asyncio.sleep(0.01)
    await wait_for(lambda: publisher.stats.confirmed >= 1000, "the full messages confirmed, long before the linger")
    assert (publisher.stats.spooled, publisher.stats.dropped) == (0, 0)
    await publisher.close(5.0)


@pytest.mark.integration
async def test_a_block_that_cannot_be_encoded_is_counted_and_the_rest_published(
    tmp_path, rabbitmq_url, topology, caplog
):
    """Blocks are encoded in the background, not by the request: a value msgpack cannot hold (here a numpy
    integer, which JSON cannot hold either) costs its own records, counted and logged, and nothing else."""
    publisher = InferenceLogPublisher(broker_settings(tmp_path, rabbitmq_url, topology, log_publish_linger_s=0.0))
    await publisher.start()
    await wait_for(lambda: publisher.ready, "the connection")
    good = record()
    bad = inference_log.record_block(record())
    bad.entity_ids = [np.int64(7)]
    with caplog.at_level(logging.ERROR, logger="bff.inference_log"):
        publisher.submit_block(bad)
        await wait_for(lambda: publisher.stats.dropped == 1, "the bad record counted")
        publisher.submit(good)
        await wait_for(lambda: publisher.stats.confirmed == 1, "the good record confirmed")
    assert publisher.ready
    await publisher.close(5.0)
    assert (publisher.stats.enqueued, publisher.stats.confirmed, publisher.stats.dropped) == (2, 1, 1)
    assert any("could not be encoded" in r.getMessage() for r in caplog.records)
    lines = [
        line for m in await queued_messages(rabbitmq_url, topology) for line in message_lines(m.body, m.content_type)
    ]
    assert [InferenceLogRecord.from_json_bytes(line) for line in lines] == [good]


async def left_in_the_spool(spool_dir: Path, n: int) -> list[InferenceLogRecord]:
    """``n`` records that a publisher which never reached the broker left in the spool (an earlier process)."""
    offline = InferenceLogPublisher(settings(spool_dir))
    await offline.start()
    records = [record() for _ in range(n)]
    for r in records:
        offline.submit(r)
    await offline.close(1.0)
    assert offline.stats.spooled == offline.stats.undrained == n
    return records


@pytest.mark.integration
async def test_a_new_process_replays_the_spool_in_order(tmp_path, rabbitmq_url, topology):
    records = await left_in_the_spool(tmp_path, 300)

    online = InferenceLogPublisher(broker_settings(tmp_path, rabbitmq_url, topology))
    await online.start()
    await wait_for(lambda: online.stats.replayed == 300, "the replay")
    assert online.spool_backlog_bytes == 0
    await online.close(5.0)
    lines = [
        line for m in await queued_messages(rabbitmq_url, topology) for line in message_lines(m.body, m.content_type)
    ]
    assert [InferenceLogRecord.from_json_bytes(line).request_id for line in lines] == [r.request_id for r in records]


@pytest.mark.integration
async def test_fresh_records_are_published_before_the_spool_backlog(tmp_path, rabbitmq_url, topology):
    """While a message's worth of fresh records waits (in memory, lost if the process dies), the backlog (on
    disk) waits: the buffer is published first, the spool once less than a message is left."""
    backlog = await left_in_the_spool(tmp_path, 200)

    # One message of 100 records per round: three rounds of fresh records wait when the publisher connects.
    online = InferenceLogPublisher(
        broker_settings(tmp_path, rabbitmq_url, topology, log_message_max_records=100, log_publish_max_in_flight=1)
    )
    fresh = [record() for _ in range(300)]
    for r in fresh:
        online.submit(r)
    await online.start()
    await wait_for(lambda: online.stats.replayed == 200, "the replay")
    await online.close(5.0)
    assert (online.stats.confirmed, online.stats.spooled, online.stats.dropped) == (300, 0, 0)
    lines = [
        line for m in await queued_messages(rabbitmq_url, topology) for line in message_lines(m.body, m.content_type)
    ]
    assert [InferenceLogRecord.from_json_bytes(line).request_id for line in lines] == [
        r.request_id for r in [*fresh, *backlog]
    ]


def request_block(rows: int, model_name: str = "credit_default") -> WireBlock:
    """A request's block as the BFF builds it, with the request ids it generates."""
    request_id = str(uuid.uuid4())
    return log_block(
        request_ids=[f"{request_id}-{i}" for i in range(rows)] if rows > 1 else [request_id],
        timestamp=datetime.now(UTC),
        entity_ids=[None] * rows,
        features=np.ones((rows, len(FEATURE_NAMES)), dtype=np.float32),
        store_features=[[] for _ in range(rows)],
        model_name=model_name,
        model_versions=["1"] * rows,
        probabilities=np.full(rows, 0.5, dtype=np.float32),
        decisions=decide(np.full(rows, 0.5, dtype=np.float32), 0.5).tolist(),  # as the BFF makes them
        latency_ms=1.0,
        roles=[Role.CHAMPION] * rows,
    )


def test_the_buffer_holds_a_record_in_under_400_bytes(tmp_path):
    """LOG_BUFFER_SIZE's memory, as its comment states it: under 400 bytes a record, whether the records come
    as blocks of one row (single predictions) or of 256."""
    for rows, blocks in ((1, 5000), (256, 20)):
        publisher = InferenceLogPublisher(settings(tmp_path))
        tracemalloc.start()
        try:
            for _ in range(blocks):
                publisher.submit_block(request_block(rows))
            per_record = tracemalloc.get_traced_memory()[0] / (rows * blocks)
        finally:
            tracemalloc.stop()
        assert publisher.buffered == rows * blocks
        assert per_record < 400, (rows, per_record)


def test_what_waits_in_the_buffer_is_no_object_per_request_for_the_garbage_collector(tmp_path):
    # Objects the collector tracks, kept past their request, make it run every few hundred of them and walk
    # them all each time, while requests wait: the buffer keeps a few open blocks, not one per request.
    publisher = InferenceLogPublisher(settings(tmp_path, log_message_max_records=500))
    gc.collect()
    gc.disable()
    try:
        tracked_before = len(gc.get_objects())
        for i in range(2000):
            publisher.submit_block(request_block(1, model_name="credit_default" if i % 1000 else "other"))
        tracked = len(gc.get_objects()) - tracked_before
    finally:
        gc.enable()
    assert publisher.buffered == 2000
    assert tracked < 100, tracked


async def test_the_buffer_keeps_the_order_and_the_values_of_the_records_it_gathers(tmp_path):
    """Blocks of one model gather into one up to a message's size; another model, or a block of a message's size
    or more, starts the next. Spooled (broker down), the records come out as submitted."""
    publisher = InferenceLogPublisher(settings(tmp_path, log_message_max_records=4))
    blocks = [request_block(1), request_block(2), request_block(1, "other"), request_block(3), request_block(5)]
    for block in blocks:
        publisher.submit_block(block)
    assert [b.rows for b in publisher._buffer] == [3, 1, 3, 5]
    await publisher.start()
    await publisher.close(timeout=0.5)
    assert spooled_lines(tmp_path) == [line for block in blocks for line in block_lines(block)]


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
    dead_records = [
        InferenceLogRecord.from_json_bytes(line) for m in dead for line in message_lines(m.body, m.content_type)
    ]
    assert dead_records == [r]
    assert dead[0].headers["x-death"][0]["reason"] == "rejected"


@pytest.mark.integration
async def test_close_drains_the_spool_to_the_broker_once_it_is_back(tmp_path, rabbitmq_url, topology, rabbit_proxy):
    # What SIGTERM does in the BFF (lifespan exit -> close): RabbitMQ was down, records piled up in
    # the spool, RabbitMQ is back but the publisher has not reconnected yet.
    rabbit_proxy.down()
    url = via_proxy(rabbitmq_url, rabbit_proxy)
    publisher = InferenceLogPublisher(broker_settings(tmp_path, url, topology, log_reconnect_max_s=60.0))
    await publisher.start()
    records = [record() for _ in range(300)]
    for r in records:
        publisher.submit(r)
    await wait_for(lambda: publisher.stats.spooled == 300, "the records to reach the spool")
    assert publisher.state is PublisherState.DISCONNECTED
    assert publisher.spool_backlog_bytes > 0
    undrained_before = undrained_total()

    rabbit_proxy.up()  # no await between this and close: the background task cannot reconnect first
    await publisher.close(30.0)

    assert publisher.stats.replayed == 300
    assert publisher.stats.undrained == 0
    assert publisher.spool_backlog_bytes == 0
    assert REGISTRY.get_sample_value("bff_inference_log_spool_backlog_bytes") == 0
    assert undrained_total() == undrained_before
    # On disk: nothing left for a next process.
    assert spooled_ids(tmp_path) == []
    # In RabbitMQ: every record, in order, once.
    lines = [
        line for m in await queued_messages(rabbitmq_url, topology) for line in message_lines(m.body, m.content_type)
    ]
    assert [InferenceLogRecord.from_json_bytes(line).request_id for line in lines] == [r.request_id for r in records]


@pytest.mark.integration
async def test_close_drains_a_backlog_left_by_an_earlier_process(tmp_path, rabbitmq_url, topology):
    records = await left_in_the_spool(tmp_path, 250)

    # Started and closed at once: the replay happens inside close, not before.
    online = InferenceLogPublisher(broker_settings(tmp_path, rabbitmq_url, topology))
    await online.start()
    await online.close(30.0)
    assert (online.stats.replayed, online.stats.undrained) == (250, 0)
    assert spooled_ids(tmp_path) == []
    lines = [
        line for m in await queued_messages(rabbitmq_url, topology) for line in message_lines(m.body, m.content_type)
    ]
    assert [InferenceLogRecord.from_json_bytes(line).request_id for line in lines] == [r.request_id for r in records]


async def test_close_with_the_broker_still_down_counts_and_logs_what_stays_in_the_spool(tmp_path, caplog):
    first = InferenceLogPublisher(settings(tmp_path))
    await first.start()
    records = [record() for _ in range(120)]
    for r in records:
        first.submit(r)
    await wait_for(lambda: first.stats.spooled == 120, "the records to reach the spool")
    before = undrained_total()
    with caplog.at_level(logging.WARNING, logger="bff.inference_log"):
        await first.close(2.0)
    assert first.stats.undrained == 120
    assert undrained_total() == before + 120
    assert any("120 records" in r.getMessage() and "NOT sent" in r.getMessage() for r in caplog.records)
    # Not lost while the volume lives: the records wait on disk, in order.
    assert spooled_ids(tmp_path) == [r.request_id for r in records]

    # A next process that cannot reach the broker either counts the backlog it inherited too.
    second = InferenceLogPublisher(settings(tmp_path))
    await second.start()
    second.submit(extra := record())
    await second.close(2.0)
    assert second.stats.undrained == 121
    assert undrained_total() == before + 120 + 121
    assert spooled_ids(tmp_path) == [r.request_id for r in [*records, extra]]


def test_a_full_message_of_the_largest_records_fits_the_log_workers_limit():
    """The log worker dead-letters a message over MAX_MESSAGE_BYTES whole, so a message of
    LOG_MESSAGE_MAX_RECORDS records, every field at the longest the BFF can write it, must stay under it
    (both services' defaults): as blocks (published) and as JSON lines (replayed from the spool)."""
    n = Settings().log_message_max_records
    batch_row_id = "r" * 100 + f"-{Settings().max_batch_size - 1}"  # the longest X-Request-ID, then the row
    block = log_block(
        request_ids=[batch_row_id] * n,
        timestamp=datetime.now(UTC),
        entity_ids=[MAX_ENTITY_ID] * n,
        features=np.full((n, len(FEATURE_NAMES)), -np.finfo(np.float32).tiny / 3, dtype=np.float32),
        store_features=[list(FEATURE_NAMES)] * n,
        model_name="m" * 128,
        model_versions=["v" * 128] * n,
        probabilities=np.full(n, 0.12345678901234568),
        decisions=["approve"] * n,
        latency_ms=123456.78901234567,
        roles=[Role.SHADOW] * n,
    )
    records = block_lines(block)
    InferenceLogRecord.from_json_bytes(records[0])  # a record the model accepts
    assert len(encode_message(records)) <= LogWorkerSettings().max_message_bytes
    assert len(encode_blocks_message([block])) <= LogWorkerSettings().max_message_bytes
