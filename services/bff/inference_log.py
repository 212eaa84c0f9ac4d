"""Fire-and-forget publishing of inference logs to RabbitMQ, with an on-disk spool so none is lost.

Request path: ``submit_block(block)`` adds a request's records, one block of columns
(``mlops_common.inference_log_wire.log_block``: nothing per row, nothing encoded), to a bounded
in-memory buffer and returns; it does no I/O and never raises. Only when the buffer has no room for
them does it append the records to the spool itself (a write into the page cache). The buffer gathers
each message's rows into one open block as they come (``extend_block``), so what waits there is a few
large blocks of strings, numbers and bytes, not a block and its lists per request: objects that the
garbage collector tracks and counts, which, kept for the linger, made it run every few dozen requests,
each pass walking all of them while requests wait.

Background task: publishes the buffer as persistent, ``mandatory`` messages of up to
``log_message_max_records`` records each (a larger block alone), each message's blocks (one per model,
as its rows were gathered) encoded once, several in flight, and waits for the broker's confirms. What is not confirmed
in time (broker down, slow, refusing, message unroutable) goes to the spool (``bff.spool``, a JSON
line per record, replayed as messages of JSON lines) and the task reconnects with backoff; while the
broker is unreachable it moves every new record from the buffer to the spool. Once connected, it
replays the spool in order whenever less than a message waits in the buffer (fresh records first: a
crash loses those, not the spool's), moving the spool's cursor only past records the broker confirmed.

The spool holds at most ``log_spool_max_bytes``: a record that does not fit is dropped (the oldest
stay), counted and logged at ERROR at most once per ``SPOOL_FULL_LOG_INTERVAL_S``.

Shutdown: ``close(timeout)`` (the BFF's lifespan exit after SIGTERM, with ``log_drain_timeout_s``)
publishes what is buffered, then, if the broker is reachable (one connection attempt if it was not
connected), drains the spool to it, all within the timeout. Whatever is still unconfirmed is spooled;
the records left in the spool are counted in ``bff_inference_log_shutdown_undrained_records_total``
and logged. They stay on disk for the next process, so they are lost only with the volume.

Accounting (``bff_inference_log_records_total{outcome}``, and ``stats`` per publisher): each submitted
record is ``enqueued`` once and leaves memory once, as ``confirmed``, ``spooled``, ``dropped`` or
``dropped_spool_full``; spooled records are ``replayed`` when the broker confirms them from the spool.
``dropped`` means the disk failed (a spool write error, or a spooled record unreadable later) and is
logged at ERROR; ``dropped_spool_full`` means the spool was at its size limit.
So at rest ``enqueued == confirmed + spooled + dropped(written) + dropped_spool_full`` and the spool
holds ``spooled - replayed - dropped(read)`` (plus what an earlier process left in it), which is what
``close`` counts as undrained. A record whose confirm was lost may reach the broker twice: delivery is
at least once and readers de-duplicate by request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import aio_pika
import numpy as np
from aio_pika.abc import AbstractConnection, AbstractExchange
from aiormq.exceptions import AMQPError
from prometheus_client import Counter, Gauge

from bff.metrics import REGISTRY
from bff.settings import Settings
from bff.spool import Spool
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import MESSAGE_CONTENT_TYPE, SCHEMA_VERSION, InferenceLogRecord, encode_message
from mlops_common.inference_log_wire import (
    BLOCKS_CONTENT_TYPE,
    WireBlock,
    block_lines,
    encode_blocks_message,
    extend_block,
    log_block,
    open_block,
)
from mlops_common.rabbit import InferenceLogTopology, connect, declare_topology

log = logging.getLogger(__name__)

OUTCOMES = ("enqueued", "confirmed", "spooled", "replayed", "dropped", "dropped_spool_full")
RECORDS = Counter(
    "bff_inference_log_records",
    "Inference log records: enqueued by requests, then confirmed by the broker, spooled to disk, "
    "replayed from the spool, dropped (disk failure) or dropped_spool_full (spool at its size limit)",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in OUTCOMES:
    RECORDS.labels(_outcome)  # at 0 from start-up, so the first `dropped` record alerts
SPOOL_BACKLOG = Gauge(
    "bff_inference_log_spool_backlog_bytes",
    "Spooled inference-log bytes not yet replayed",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
UNDRAINED = Counter(
    "bff_inference_log_shutdown_undrained_records",
    "Spooled inference-log records the publisher could not send to the broker before it closed: they stay "
    "in the spool, and are lost if its volume is deleted",
    registry=REGISTRY,
)
# A full spool drops records at the request rate: one ERROR line per interval, with the count.
SPOOL_FULL_LOG_INTERVAL_S = 60.0
BROKER_CONNECTED = Gauge(
    "bff_inference_log_broker_connected",
    "1 while the inference-log publisher is connected (of every worker: the lowest)",
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
_RECONNECT_INITIAL_S = 0.1
# Errors that mean "the broker is not taking messages now", as opposed to a bug.
_BROKER_ERRORS = (AMQPError, ConnectionError, OSError, TimeoutError)


class PublisherState(StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass
class PublisherStats:
    enqueued: int = 0
    confirmed: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    dropped_spool_full: int = 0
    # Records left in the spool when the publisher closed.
    undrained: int = 0


class _BrokerFailure(Exception):
    """Some messages were not confirmed (they are on disk now): reconnect."""


class _SpoolFullLog:
    """Logs records dropped for a full spool: the first at once, then at most one line per interval
    with the count since the last line, and a last line when the spool takes records again."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: float | None = None
        self._unlogged = 0

    def dropped(self, n: int, spool: Spool) -> None:
        self._unlogged += n
        now = time.monotonic()
        if self._last is None or now - self._last >= self._interval_s:
            self.flush(spool, "")

    def flush(self, spool: Spool, note: str) -> None:
        if not self._unlogged:
            return
        log.error(
            "inference-log spool %s is full (%d bytes on disk, limit %d): %d records DROPPED%s",
            spool.directory,
            spool.disk_bytes,
            spool.max_bytes,
            self._unlogged,
            note,
        )
        self._unlogged = 0
        self._last = time.monotonic()


def record_block(record: InferenceLogRecord) -> WireBlock:
    """One record as a block of one row."""
    return log_block(
        request_ids=[record.request_id],
        timestamp=record.timestamp,
        entity_ids=[record.entity_id],
        features=np.array([[np.nan if (v := record.features[name]) is None else v for name in FEATURE_NAMES]]),
        store_features=[record.store_features],
        model_name=record.model_name,
        model_versions=[record.model_version],
        probabilities=np.array([record.probability]),
        decisions=[record.decision],
        latency_ms=record.latency_ms,
        roles=[record.role],
    )


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Outcomes are read in bulk; this keeps asyncio from warning about failures read nowhere.
    if not task.cancelled():
        task.exception()


class InferenceLogPublisher:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topology = InferenceLogTopology.from_settings(settings)
        self._buffer: deque[WireBlock] = deque()
        # The buffer's last block while it takes more rows (from ``open_block``), else None.
        self._open_block: WireBlock | None = None
        self._buffered_records = 0
        self._wakeup = asyncio.Event()
        self._spool: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        # Messages (lists of blocks) whose confirms are awaited: spooled if cut short.
        self._inflight: list[list[WireBlock]] = []
        self._closing_connections: set[asyncio.Future[None]] = set()
        self._state = PublisherState.NEW
        self._closing = False
        self._deadline: float | None = None
        self._outage = False
        self._backoff = _RECONNECT_INITIAL_S
        self.stats = PublisherStats()
        self._counters = {outcome: RECORDS.labels(outcome) for outcome in OUTCOMES}
        self._spool_full_log = _SpoolFullLog(SPOOL_FULL_LOG_INTERVAL_S)

    # -- public -------------------------------------------------------------------------------------
    @property
    def state(self) -> PublisherState:
        if self._closing and self._state is not PublisherState.CLOSED:
            return PublisherState.CLOSING
        return self._state

    @property
    def ready(self) -> bool:
        """Connected to the broker; records are not piling up on disk."""
        return self.state is PublisherState.CONNECTED

    @property
    def buffered(self) -> int:
        """Records in memory, waiting to be published."""
        return self._buffered_records

    @property
    def spool_backlog_bytes(self) -> int:
        return self._spool.pending_bytes if self._spool is not None else 0

    async def start(self) -> None:
        """Open the spool (raises if it cannot) and start publishing in the background."""
        if self._task is not None:
            raise RuntimeError("InferenceLogPublisher already started")
        self._spool = Spool.open_slot(
            Path(self._settings.log_spool_dir),
            segment_max_bytes=self._settings.log_spool_segment_bytes,
            # The workers' slots share the directory, and so its limit.
            max_bytes=self._settings.log_spool_max_bytes // self._settings.worker_processes(),
        )
        if self._spool.has_pending():
            log.info(
                "inference-log spool %s holds %d records (%d bytes) to replay",
                self._spool.directory,
                self._spool.pending_records,
                self.spool_backlog_bytes,
            )
        SPOOL_BACKLOG.set(self.spool_backlog_bytes)
        self._task = asyncio.create_task(self._run(), name="inference-log-publisher")

    def submit(self, record: InferenceLogRecord) -> None:
        """Hand one record over for publishing. Never blocks on the network, never raises."""
        try:
            block = record_block(record)
        except Exception:
            log.exception("inference log record DROPPED")
            self._count("enqueued", 1)
            self._count("dropped", 1)
            return
        self.submit_block(block)

    def submit_block(self, block: WireBlock) -> None:
        """Hand a request's records over as one block (``log_block``): the request path's way. Never
        blocks on the network, never raises."""
        records = block.rows
        try:
            self._count("enqueued", records)
            open_ = self._state is not PublisherState.CLOSED
            if open_ and self._buffered_records + records <= self._settings.log_buffer_size:
                before = self._buffered_records
                self._add_to_buffer(block)
                self._buffered_records += records
                # Wake the background task when there is something to do: the first records (to publish
                # after the linger), a full message (no need to linger), anything while disconnected (to
                # spool at once); not for every request.
                full = self._settings.log_message_max_records
                if (
                    not before
                    or (before < full <= self._buffered_records)
                    or self._state is not PublisherState.CONNECTED
                ):
                    self._wakeup.set()
            else:
                self._spool_blocks([block])
        except Exception:
            log.exception("%d inference log records DROPPED", records)
            self._count("dropped", records)

    def _add_to_buffer(self, block: WireBlock) -> None:
        """Into the open block if it has room for the rows and is of the same model and schema, else as the
        next block, open if it leaves room for more."""
        size = self._settings.log_message_max_records
        target = self._open_block
        if (
            target is not None
            and target.rows + block.rows <= size
            and (target.model_name, target.schema_version) == (block.model_name, block.schema_version)
        ):
            extend_block(target, block)
        elif block.rows < size:
            self._open_block = open_block(block)
            self._buffer.append(self._open_block)
        else:
            self._open_block = None
            self._buffer.append(block)

    # The timeout is not a cancellation: what is unconfirmed when it expires is spooled, not lost.
    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Publish what is buffered and drain the spool to the broker if it is reachable, for at most
        ``timeout`` seconds; spool whatever the broker has not confirmed by then, count and log what the
        spool still holds, then disconnect and close the spool."""
        if self._closing:
            return
        self._deadline = asyncio.get_running_loop().time() + timeout
        self._closing = True
        self._wakeup.set()
        if self._spool is not None and self._spool.has_pending():
            log.info(
                "inference-log publisher closing: draining %d spooled records to the broker (at most %.1f s)",
                self._spool.pending_records,
                timeout,
            )
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=timeout + 1.0)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._spool_blocks([block for message in self._inflight for block in message])
        self._inflight = []
        self._spool_buffer()
        await self._disconnect()
        if self._spool is not None:
            self._spool_full_log.flush(self._spool, " (at shutdown)")
            self._count_undrained(self._spool, timeout)
            try:
                self._spool.close()
            except OSError:
                log.exception("closing the inference-log spool %s failed", self._spool.directory)
        self._state = PublisherState.CLOSED
        log.info("inference-log publisher closed: %s", asdict(self.stats))

    def _count_undrained(self, spool: Spool, timeout: float) -> None:
        undrained = spool.pending_records
        self.stats.undrained = undrained
        UNDRAINED.inc(undrained)
        if undrained:
            log.warning(
                "inference-log publisher closed with %d records (%d bytes) NOT sent to the broker within %.1f s: "
                "they stay in the spool %s for the next process, and are lost if that volume is deleted",
                undrained,
                spool.pending_bytes,
                timeout,
                spool.directory,
            )

    # -- accounting and spooling --------------------------------------------------------------------
    def _count(self, outcome: str, n: int) -> None:
        if n:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + n)
            self._counters[outcome].inc(n)

    def _spool_bodies(self, bodies: list[bytes]) -> None:
        if not bodies:
            return
        try:
            if self._spool is None:
                raise OSError("the inference-log spool is not open (publisher not started)")
            written = self._spool.append(bodies)
        except Exception:
            log.error("inference-log spool write failed: %d records DROPPED", len(bodies), exc_info=True)
            self._count("dropped", len(bodies))
        else:
            self._count("spooled", written)
            if written < len(bodies):
                self._count("dropped_spool_full", len(bodies) - written)
                self._spool_full_log.dropped(len(bodies) - written, self._spool)
            else:
                self._spool_full_log.flush(self._spool, "; it takes records again")
        SPOOL_BACKLOG.set(self.spool_backlog_bytes)

    def _spool_blocks(self, blocks: list[WireBlock]) -> None:
        """Spool blocks as their records' JSON lines: the spool, and its accounting, go by record."""
        lines = []
        for block in blocks:
            try:
                lines += block_lines(block)
            except Exception:
                log.exception("inference-log block unreadable: %d records DROPPED", block.rows)
                self._count("dropped", block.rows)
        self._spool_bodies(lines)

    def _spool_buffer(self) -> None:
        blocks = list(self._buffer)
        self._buffer.clear()
        self._open_block = None
        self._buffered_records = 0
        self._spool_blocks(blocks)

    # -- background task ----------------------------------------------------------------------------
    async def _run(self) -> None:
        # Closing while not connected makes one more connection attempt, within the close timeout, if
        # there is something to send: the buffer, or the spool to drain (the broker may be back).
        tried_while_closing = False
        while True:
            if self._closing:
                assert self._spool is not None
                nothing_to_send = not self._buffer and not self._spool.has_pending()
                if tried_while_closing or nothing_to_send or self._time_left(1.0) <= 0:
                    return
                tried_while_closing = True
            try:
                await self._connect()
            except Exception as err:
                self._on_unavailable(err)
                await self._spool_while_waiting(self._next_backoff())
                continue
            try:
                await self._pump()
            except Exception as err:
                self._on_unavailable(err)
            finally:
                await self._disconnect()
            if self._closing:
                return
            await self._spool_while_waiting(self._next_backoff())

    def _on_unavailable(self, err: Exception) -> None:
        if not isinstance(err, (_BrokerFailure, *_BROKER_ERRORS)):
            log.error("inference-log publisher failed unexpectedly; reconnecting", exc_info=err)
        elif self._closing:
            log.warning("inference-log publisher closing: stopped sending to the broker (%r)", err)
        elif not self._outage:
            log.warning("inference-log broker unavailable (%r): spooling records until it is back", err)
        self._outage = True
        self._state = PublisherState.DISCONNECTED
        BROKER_CONNECTED.set(0)

    def _next_backoff(self) -> float:
        delay = self._backoff
        self._backoff = min(delay * 2, self._settings.log_reconnect_max_s)
        return delay

    async def _spool_while_waiting(self, delay: float) -> None:
        """Wait before reconnecting; meanwhile every record submitted goes to disk, not to memory."""
        loop = asyncio.get_running_loop()
        until = loop.time() + delay
        self._spool_buffer()
        while not self._closing and (remaining := until - loop.time()) > 0:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            self._spool_buffer()

    def _time_left(self, limit: float) -> float:
        if self._deadline is None:
            return limit
        return max(0.0, min(limit, self._deadline - asyncio.get_running_loop().time()))

    async def _connect(self) -> None:
        self._state = PublisherState.CONNECTING
        timeout = self._time_left(self._settings.log_connect_timeout_s)
        url = self._settings.rabbitmq_url.get_secret_value()
        connection = await connect(url, connect_timeout_s=timeout, name="bff inference-log publisher")
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._exchange, _, _ = await asyncio.wait_for(declare_topology(channel, self._topology), timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        connection.close_callbacks.add(self._on_connection_closed)
        self._connection = connection
        self._state = PublisherState.CONNECTED
        self._outage = False
        BROKER_CONNECTED.set(1)
        log.info("inference-log publisher connected; %d spooled bytes to replay", self.spool_backlog_bytes)

    def _on_connection_closed(self, *_: Any) -> None:
        self._wakeup.set()

    async def _disconnect(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is None or connection.is_closed:
            return
        # A hung broker may never answer the close: stop waiting after a while, but let the close
        # run on (it ends when the socket or the heartbeat fails) rather than abandon it half-done.
        closing = asyncio.ensure_future(connection.close())
        self._closing_connections.add(closing)
        closing.add_done_callback(self._closing_connections.discard)
        closing.add_done_callback(_retrieve)
        await asyncio.wait([closing], timeout=2.0)

    async def _pump(self) -> None:
        """Publish the buffer and replay the spool until a failure, or, when closing, until both are
        empty or the close timeout is spent."""
        assert self._spool is not None
        while True:
            if self._connection is None or self._connection.is_closed:
                raise _BrokerFailure("connection closed")
            if self._closing:
                if self._time_left(1.0) <= 0:
                    return
                if self._buffer:
                    await self._publish_fresh()
                elif self._spool.has_pending():
                    await self._replay()
                else:
                    return
                continue
            if self._buffer:
                await self._linger()
                await self._publish_fresh()
            # Fresh records first: the buffer's are lost if the process dies, the spool's are on disk. While a
            # burst keeps a message's worth waiting, the backlog waits; replaying it then would take the pump
            # away from a buffer that fills meanwhile, and spill more of it to disk.
            if self._spool.has_pending() and self._buffered_records < self._settings.log_message_max_records:
                await self._replay()
            elif not self._buffer and not self._closing:
                self._wakeup.clear()
                await self._wakeup.wait()

    async def _linger(self) -> None:
        """Wait up to ``log_publish_linger_s`` for a full message, no longer than it takes to fill one: a
        fuller message costs the broker, the log worker and this event loop less per record, and a burst
        of batches must not outgrow the buffer while it waits."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self._settings.log_publish_linger_s
        while (
            self._buffered_records < self._settings.log_message_max_records
            and not self._closing
            and (remaining := until - loop.time()) > 0
        ):
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take_fresh(self) -> list[list[WireBlock]]:
        """Messages from the head of the buffer: up to ``log_message_max_records`` records each (a larger
        block alone), up to ``log_publish_max_in_flight`` of them."""
        messages: list[list[WireBlock]] = []
        size = self._settings.log_message_max_records
        while self._buffer and len(messages) < self._settings.log_publish_max_in_flight:
            message, records = [], 0
            while self._buffer and (not message or records + self._buffer[0].rows <= size):
                block = self._buffer.popleft()
                if block is self._open_block:
                    self._open_block = None
                message.append(block)
                records += block.rows
            self._buffered_records -= records
            messages.append(message)
        return messages

    async def _publish_fresh(self) -> None:
        messages, bodies = [], []
        for message in self._take_fresh():
            try:
                bodies.append(encode_blocks_message(message))
            except Exception:
                # A value the request path handed over that msgpack cannot hold (a bug, not an outage):
                # the message's records go to the spool (or are counted dropped if JSON cannot hold them
                # either), never left uncounted.
                log.exception("an inference-log message could not be encoded; spooling its records")
                self._spool_blocks(message)
            else:
                messages.append(message)
        if not messages:
            return
        self._inflight = messages
        confirmed = await self._publish(bodies, BLOCKS_CONTENT_TYPE)
        self._inflight = []
        self._count("confirmed", sum(b.rows for m, ok in zip(messages, confirmed, strict=True) if ok for b in m))
        self._spool_blocks([block for m, ok in zip(messages, confirmed, strict=True) if not ok for block in m])
        if not all(confirmed):
            raise _BrokerFailure(f"{confirmed.count(False)} of {len(messages)} messages not confirmed")
        self._backoff = _RECONNECT_INITIAL_S

    async def _replay(self) -> None:
        assert self._spool is not None
        batch = self._spool.read(self._settings.log_message_max_records * self._settings.log_publish_max_in_flight)
        if batch.corrupt:
            log.error("inference-log spool: %d corrupt records DROPPED", batch.corrupt)
            self._count("dropped", batch.corrupt)
        if batch.torn_bytes:
            log.error("inference-log spool: %d bytes of a torn write at a segment end discarded", batch.torn_bytes)
        if batch.payloads:
            size = self._settings.log_message_max_records
            bodies = [encode_message(batch.payloads[i : i + size]) for i in range(0, len(batch.payloads), size)]
            confirmed = await self._publish(bodies, MESSAGE_CONTENT_TYPE)
            if not all(confirmed):
                # The records stay in the spool; those that did get through will come again.
                raise _BrokerFailure("replayed messages not confirmed")
        self._spool.commit(batch)
        self._count("replayed", len(batch.payloads))
        SPOOL_BACKLOG.set(self.spool_backlog_bytes)
        self._backoff = _RECONNECT_INITIAL_S

    async def _publish(self, bodies: list[bytes], content_type: str) -> list[bool]:
        """Publish the message bodies concurrently; True for each one the broker confirmed in time."""
        exchange = self._exchange
        if exchange is None:
            return [False] * len(bodies)
        tasks = [
            asyncio.ensure_future(
                exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type=content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        headers={"x-schema-version": SCHEMA_VERSION},
                        app_id="bff",
                    ),
                    self._topology.routing_key,
                    mandatory=True,
                )
            )
            for body in bodies
        ]
        for task in tasks:
            task.add_done_callback(_retrieve)
        try:
            await asyncio.wait(tasks, timeout=self._time_left(self._settings.log_publish_timeout_s))
        finally:
            for task in tasks:
                task.cancel()
        return [task.done() and not task.cancelled() and task.exception() is None for task in tasks]
