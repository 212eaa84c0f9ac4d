"""Fire-and-forget publishing of inference logs to RabbitMQ, with an on-disk spool so none is lost.

Request path: ``submit(record)`` appends the record to a bounded in-memory buffer and returns; it does
no I/O and never raises. Only when the buffer is full does it append the record to the spool itself
(a write into the page cache).

Background task: publishes the buffer as persistent, ``mandatory`` messages of up to
``log_message_max_records`` JSON lines each, several in flight, and waits for the broker's confirms.
What is not confirmed in time (broker down, slow, refusing, message unroutable) goes to the spool
(``bff.spool``) and the task reconnects with backoff; while the broker is unreachable it moves every
new record from the buffer to the spool. Once connected, it replays the spool in order, moving the
spool's cursor only past records the broker confirmed.

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
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
import numpy as np
from aio_pika.abc import AbstractConnection, AbstractExchange
from aiormq.exceptions import AMQPError
from prometheus_client import Counter, Gauge

from bff.metrics import REGISTRY
from bff.settings import Settings
from bff.spool import Spool
from mlops_common.inference_log import MESSAGE_CONTENT_TYPE, SCHEMA_VERSION, InferenceLogRecord, encode_message
from mlops_common.inference_log_wire import WireFeatures, WireRecord
from mlops_common.rabbit import InferenceLogTopology, connect, declare_topology
from mlops_common.rollout import Role

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
_ENCODER = msgspec.json.Encoder()
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


def encode_records(
    *,
    request_ids: list[str],
    timestamp: datetime,
    entity_ids: list[int | None],
    features: np.ndarray,
    store_features: list[list[str]],
    model_name: str,
    model_versions: list[str],
    probabilities: list[float],
    decisions: list[str],
    latency_ms: float,
    roles: list[Role],
) -> list[bytes]:
    """The JSON line of each row of a batch, built from its columns as the log's wire structs and
    encoded by msgspec: the request path builds and validates no model per row (the values were
    validated on the way in; the log worker validates each record it reads). NaN features are written
    as null, which the readers take as a missing value."""
    stamp = timestamp.astimezone(UTC)
    rows = features.tolist()
    encode = _ENCODER.encode
    return [
        encode(
            WireRecord(
                request_id=request_ids[i],
                timestamp=stamp,
                features=WireFeatures(*rows[i]),
                model_name=model_name,
                model_version=model_versions[i],
                probability=probabilities[i],
                decision=decisions[i],
                latency_ms=latency_ms,
                schema_version=SCHEMA_VERSION,
                entity_id=entity_ids[i],
                store_features=store_features[i],
                role=roles[i],
            )
        )
        for i in range(len(request_ids))
    ]


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Outcomes are read in bulk; this keeps asyncio from warning about failures read nowhere.
    if not task.cancelled():
        task.exception()


class InferenceLogPublisher:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topology = InferenceLogTopology.from_settings(settings)
        self._buffer: deque[bytes] = deque()  # serialized records (JSON lines)
        self._wakeup = asyncio.Event()
        self._spool: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        # Messages (lists of serialized records) whose confirms are awaited: spooled if cut short.
        self._inflight: list[list[bytes]] = []
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
        return len(self._buffer)

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
        """Hand a record over for publishing. Never blocks on the network, never raises."""
        try:
            body = record.to_json_bytes()
        except Exception:
            log.exception("inference log record DROPPED")
            self._count("enqueued", 1)
            self._count("dropped", 1)
            return
        self.submit_serialized([body])

    def submit_serialized(self, bodies: list[bytes]) -> None:
        """Hand records over already serialized (``encode_records``): the request path's way, a batch at
        once. Never blocks on the network, never raises."""
        try:
            self._count("enqueued", len(bodies))
            open_ = self._state is not PublisherState.CLOSED
            room = self._settings.log_buffer_size - len(self._buffer) if open_ else 0
            if room > 0:
                self._buffer.extend(bodies[:room])
                self._wakeup.set()
            if len(bodies) > room:
                self._spool_bodies(bodies[room:])
        except Exception:
            log.exception("%d inference log records DROPPED", len(bodies))
            self._count("dropped", len(bodies))

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
        self._spool_bodies([body for message in self._inflight for body in message])
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

    def _spool_buffer(self) -> None:
        bodies = list(self._buffer)
        self._buffer.clear()
        self._spool_bodies(bodies)

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
                if len(self._buffer) < self._settings.log_message_max_records:
                    # A fuller message costs the broker, and this event loop, less per record.
                    await asyncio.sleep(self._settings.log_publish_linger_s)
                await self._publish_fresh()
            if self._spool.has_pending():
                await self._replay()
            elif not self._buffer and not self._closing:
                self._wakeup.clear()
                await self._wakeup.wait()

    def _messages(self, bodies: list[bytes]) -> list[list[bytes]]:
        size = self._settings.log_message_max_records
        return [bodies[i : i + size] for i in range(0, len(bodies), size)]

    async def _publish_fresh(self) -> None:
        limit = self._settings.log_message_max_records * self._settings.log_publish_max_in_flight
        bodies = [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]
        messages = self._inflight = self._messages(bodies)
        confirmed = await self._publish(messages)
        self._inflight = []
        self._count("confirmed", sum(len(m) for m, ok in zip(messages, confirmed, strict=True) if ok))
        self._spool_bodies([body for m, ok in zip(messages, confirmed, strict=True) if not ok for body in m])
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
            confirmed = await self._publish(self._messages(batch.payloads))
            if not all(confirmed):
                # The records stay in the spool; those that did get through will come again.
                raise _BrokerFailure("replayed messages not confirmed")
        self._spool.commit(batch)
        self._count("replayed", len(batch.payloads))
        SPOOL_BACKLOG.set(self.spool_backlog_bytes)
        self._backoff = _RECONNECT_INITIAL_S

    async def _publish(self, messages: list[list[bytes]]) -> list[bool]:
        """Publish the messages concurrently; True for each one the broker confirmed in time."""
        exchange = self._exchange
        if exchange is None:
            return [False] * len(messages)
        tasks = [
            asyncio.ensure_future(
                exchange.publish(
                    aio_pika.Message(
                        encode_message(bodies),
                        content_type=MESSAGE_CONTENT_TYPE,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        headers={"x-schema-version": SCHEMA_VERSION},
                        app_id="bff",
                    ),
                    self._topology.routing_key,
                    mandatory=True,
                )
            )
            for bodies in messages
        ]
        for task in tasks:
            task.add_done_callback(_retrieve)
        try:
            await asyncio.wait(tasks, timeout=self._time_left(self._settings.log_publish_timeout_s))
        finally:
            for task in tasks:
                task.cancel()
        return [task.done() and not task.cancelled() and task.exception() is None for task in tasks]
