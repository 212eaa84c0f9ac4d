"""The log worker: inference-log records from RabbitMQ to Parquet objects in S3, none lost.

It consumes with manual acks and a prefetch window. Messages (JSON lines, see
``mlops_common.inference_log``) are parsed on arrival and collect into a batch, written when it holds
``batch_max_records`` records or its oldest message is ``batch_max_age_s`` old, whichever comes first
(a timer, so a quiet queue still flushes). A batch becomes one Parquet object per partition (model,
version, hour) at a key derived from its request ids, so writing the same batch again overwrites.

Its messages are acked only after every object is written. If a write fails they are nacked
(requeued) and the worker probes S3 with backoff until it answers before writing again, so an outage
costs each message one redelivery. A record that does not parse or validate is republished, with the
reason in the ``x-inference-log-error`` header, to the dead-letter queue (confirmed) before its
message is acked. If the connection drops, the messages in hand are forgotten: the broker redelivers
them. On ``stop`` (SIGTERM) the worker stops consuming, writes what it holds and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage
from aiormq.exceptions import AMQPError
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from log_worker.settings import Settings
from mlops_common.inference_log import (
    InferenceLogRecord,
    object_key,
    partition_records,
    records_to_table,
    split_message,
    table_to_parquet,
)
from mlops_common.metrics import service_registry
from mlops_common.rabbit import InferenceLogTopology, connect, declare_topology
from mlops_common.s3 import ensure_bucket, s3_client

log = logging.getLogger(__name__)

REGISTRY = service_registry()
# No labels: every series exists at 0 from start-up, so rate() and increase() see the first event.
CONSUMED = Counter(
    "log_worker_messages_consumed",
    "Messages received from the inference-log queue (with redeliveries)",
    registry=REGISTRY,
)
RECORDS_WRITTEN = Counter("log_worker_records_written", "Inference-log records written to S3", registry=REGISTRY)
BATCHES_WRITTEN = Counter(
    "log_worker_batches_written", "Batches written to S3 (one Parquet object per partition)", registry=REGISTRY
)
WRITE_FAILURES = Counter(
    "log_worker_write_failures", "Batch writes to S3 that failed (their messages were requeued)", registry=REGISTRY
)
DEAD_LETTERED = Counter(
    "log_worker_dead_lettered", "Records sent to the dead-letter queue as unparseable or invalid", registry=REGISTRY
)
BATCH_WRITE_SECONDS = Histogram(
    "log_worker_batch_write_seconds",
    "Time to write one batch to S3",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)

ERROR_HEADER = "x-inference-log-error"
_INITIAL_BACKOFF_S = 0.2
_MAX_REASON_CHARS = 1000


def reject_reason(err: Exception) -> str:
    if isinstance(err, ValidationError):
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in err.errors()[:5])
        reason = f"invalid inference-log record ({err.error_count()} errors): {details}"
    else:
        reason = f"invalid inference-log record: {err}"
    return reason[:_MAX_REASON_CHARS]


def parse_message(body: bytes) -> tuple[list[InferenceLogRecord], list[tuple[bytes, str]]]:
    """The valid records of a message body, and each rejected line with the reason."""
    lines = split_message(body)
    if not lines:
        return [], [(body, "empty message")]
    records: list[InferenceLogRecord] = []
    rejects: list[tuple[bytes, str]] = []
    for line in lines:
        try:
            records.append(InferenceLogRecord.from_json_bytes(line))
        except ValueError as err:
            rejects.append((line, reject_reason(err)))
    return records, rejects


@dataclass
class _Delivery:
    message: AbstractIncomingMessage
    records: list[InferenceLogRecord]
    rejects: list[tuple[bytes, str]]
    received: float

    @property
    def size(self) -> int:
        return len(self.records) + len(self.rejects)


class _BrokerFailure(Exception):
    pass


class LogWorker:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topology = InferenceLogTopology.from_settings(settings)
        self._s3 = s3_client(settings, timeout_s=settings.s3_timeout_s)
        self._pending: deque[_Delivery] = deque()
        self._pending_records = 0
        self._arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self._dlx: AbstractExchange | None = None
        self._backoff = _INITIAL_BACKOFF_S
        # False from a failed write until S3 answers again.
        self._s3_up = True

    def stop(self) -> None:
        """Finish gracefully: stop consuming, write what is in hand, return from ``run``."""
        self._stopping.set()
        self._arrived.set()

    async def run(self) -> None:
        await self._ensure_bucket()
        while not self._stopping.is_set():
            try:
                await self._session()
            except Exception as err:
                expected = isinstance(err, (AMQPError, OSError, TimeoutError, _BrokerFailure))
                log.warning("log worker lost RabbitMQ (%r); reconnecting", err, exc_info=not expected)
            finally:
                # Unacked messages of a closed channel go back to the queue by themselves.
                self._pending.clear()
                self._pending_records = 0
            if not self._stopping.is_set():
                await self._sleep(self._backoff)
                self._backoff = min(self._backoff * 2, self._settings.reconnect_max_s)
        log.info("log worker stopped")

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _ensure_bucket(self) -> None:
        delay = _INITIAL_BACKOFF_S
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(ensure_bucket, self._s3, self._settings.logs_bucket)
                return
            except Exception as err:
                log.warning("logs bucket %s not reachable yet (%r)", self._settings.logs_bucket, err)
            await self._sleep(delay)
            delay = min(delay * 2, self._settings.s3_retry_max_s)

    # -- one connection -------------------------------------------------------------------------------
    async def _session(self) -> None:
        connection = await connect(
            self._settings.rabbitmq_url.get_secret_value(),
            connect_timeout_s=self._settings.connect_timeout_s,
            name="log worker",
        )
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=self._settings.prefetch_count)
            _, queue, self._dlx = await declare_topology(channel, self._topology)
            connection.close_callbacks.add(lambda *_: self._arrived.set())
            consumer_tag = await queue.consume(self._on_message)
            log.info("log worker consuming %s", self._topology.queue)
            self._backoff = _INITIAL_BACKOFF_S
            await self._process(connection)
            await queue.cancel(consumer_tag)
            await self._drain()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        CONSUMED.inc()
        records, rejects = parse_message(message.body)
        delivery = _Delivery(message, records, rejects, asyncio.get_running_loop().time())
        self._pending.append(delivery)
        self._pending_records += delivery.size
        # Wake the batcher to start the age timer, or because the batch is full.
        if len(self._pending) == 1 or self._pending_records >= self._settings.batch_max_records:
            self._arrived.set()

    async def _process(self, connection: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if connection.is_closed:
                raise _BrokerFailure("connection closed")
            wait: float | None = None
            if self._pending:
                if self._pending_records >= self._settings.batch_max_records:
                    wait = 0.0
                else:
                    wait = max(0.0, self._pending[0].received + self._settings.batch_max_age_s - loop.time())
            if wait == 0.0:
                if not await self._flush_batch():
                    await self._wait_for_s3()
                continue
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait)

    async def _drain(self) -> None:
        """On stop: write what is in hand (the broker requeues whatever is left unacked). With S3 down,
        leave it all to the broker rather than wait for S3 to time out again."""
        deadline = time.monotonic() + self._settings.shutdown_timeout_s
        while self._pending and self._s3_up and time.monotonic() < deadline:
            if not await self._flush_batch():
                return

    # -- one batch ------------------------------------------------------------------------------------
    def _take_batch(self) -> list[_Delivery]:
        batch: list[_Delivery] = []
        size = 0
        while self._pending and (not batch or size + self._pending[0].size <= self._settings.batch_max_records):
            delivery = self._pending.popleft()
            batch.append(delivery)
            size += delivery.size
        self._pending_records -= size
        return batch

    async def _flush_batch(self) -> bool:
        """Write, dead-letter and ack one batch; False (messages requeued) when the S3 write failed."""
        batch = self._take_batch()
        records = [record for delivery in batch for record in delivery.records]
        if records:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._write, records)
            except Exception as err:
                self._s3_up = False
                WRITE_FAILURES.inc()
                log.warning("writing %d inference-log records to S3 failed (%r); requeueing", len(records), err)
                for delivery in batch:
                    await delivery.message.nack(requeue=True)
                return False
            BATCH_WRITE_SECONDS.observe(time.perf_counter() - started)
            BATCHES_WRITTEN.inc()
            RECORDS_WRITTEN.inc(len(records))
        await self._dead_letter(batch)
        for delivery in batch:
            await delivery.message.ack()
        return True

    def _write(self, records: list[InferenceLogRecord]) -> None:
        for partition, group in sorted(partition_records(records).items()):
            # A record delivered twice in one batch (a lost publisher confirm) is written once.
            unique = list({record.request_id: record for record in reversed(group)}.values())
            unique.sort(key=lambda record: record.timestamp)
            key = object_key(self._settings.logs_prefix, partition, (record.request_id for record in unique))
            self._s3.put_object(
                Bucket=self._settings.logs_bucket,
                Key=key,
                Body=table_to_parquet(records_to_table(unique)),
                ContentType="application/vnd.apache.parquet",
            )

    async def _dead_letter(self, batch: list[_Delivery]) -> None:
        rejects = [(delivery.message, line, reason) for delivery in batch for line, reason in delivery.rejects]
        if not rejects:
            return
        assert self._dlx is not None
        results = await asyncio.gather(
            *(self._publish_reject(message, line, reason) for message, line, reason in rejects),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise _BrokerFailure(f"dead-lettering {len(failures)} records failed: {failures[0]!r}")
        DEAD_LETTERED.inc(len(rejects))
        for _, line, reason in rejects:
            log.warning("dead-lettered an inference-log record: %s: %r", reason, line[:200])

    async def _publish_reject(self, message: AbstractIncomingMessage, line: bytes, reason: str) -> Any:
        assert self._dlx is not None
        headers = {
            ERROR_HEADER: reason,
            "x-original-exchange": message.exchange or "",
            "x-original-routing-key": message.routing_key or "",
        }
        if message.message_id:
            headers["x-original-message-id"] = message.message_id
        return await self._dlx.publish(
            aio_pika.Message(
                line,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=headers,
            ),
            self._topology.dead_letter_queue,
            mandatory=True,
        )

    async def _wait_for_s3(self) -> None:
        """Back off until S3 answers (the nacked messages come back meanwhile and wait in hand)."""
        delay = _INITIAL_BACKOFF_S
        while not self._stopping.is_set():
            await self._sleep(delay)
            try:
                await asyncio.to_thread(self._s3.head_bucket, Bucket=self._settings.logs_bucket)
            except Exception as err:
                log.debug("S3 still unavailable: %r", err)
                delay = min(delay * 2, self._settings.s3_retry_max_s)
            else:
                log.info("S3 answers again; resuming writes")
                self._s3_up = True
                return
