"""The log worker: inference-log records from RabbitMQ to the Delta table in S3, each exactly once.

It consumes with manual acks and a prefetch window sized from bytes (``Settings.prefetch_count``).
Messages (blocks of columns from the BFF, or JSON lines: ``mlops_common.inference_log_wire``) are
parsed and turned into Arrow rows on arrival (``log_worker.fast_reader``; the record model only for a
message with a record those readers do not take) and collect into a batch, written when it holds
``batch_max_records`` records, the window is full, or its oldest message is ``batch_max_age_s`` old (a
timer, so a quiet queue still flushes); a write takes all that waits by then, up to
``batch_backlog_max_records``. A batch is one MERGE on ``request_id`` and ``timestamp`` into the table:
a record the table already holds (a redelivery, a second worker, a replay from the dead-letter queue)
is not inserted again.

Its messages are acked only after the MERGE has committed. Failures are told apart by asking S3:
- S3 does not answer: the batch stays in hand (unacked, so nothing new arrives beyond the window) and
  the worker probes S3 with backoff, then writes the same batch again;
- S3 answers, so the rows are at fault: the batch is split in halves until the failing records are
  alone, and those records alone go to the dead-letter queue with the reason.
A record that does not parse, validate or fit an Arrow row (as a JSON line), a block that does not
decode or whose columns disagree (as a message of that block alone), and a message over
``max_message_bytes`` are republished to the dead-letter queue (confirmed, the reason in the
``x-inference-log-error`` header) before their message is acked. If the connection drops, the messages
in hand are forgotten: the broker redelivers them. On ``stop`` (SIGTERM) the worker stops consuming,
writes what it holds and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import msgspec
import pyarrow as pa
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage
from aiormq.exceptions import AMQPError
from deltalake import DeltaTable
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from log_worker.fast_reader import blocks_to_table, lines_to_table
from log_worker.settings import Settings
from mlops_common.delta import TableSchemaError
from mlops_common.inference_log import (
    MESSAGE_CONTENT_TYPE,
    TABLE_SCHEMA,
    InferenceLogRecord,
    open_inference_log_table,
    records_to_table,
    split_message,
    write_inference_log_rows,
)
from mlops_common.inference_log_wire import (
    BLOCKS_CONTENT_TYPE,
    WireBlock,
    block_lines,
    decode_blocks,
    encode_blocks_message,
    split_blocks,
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
RECORDS_WRITTEN = Counter(
    "log_worker_records_written", "Inference-log records inserted into the table", registry=REGISTRY
)
RECORDS_ALREADY_WRITTEN = Counter(
    "log_worker_records_already_written",
    "Records not inserted because the table already held their request id (delivered more than once)",
    registry=REGISTRY,
)
BATCHES_WRITTEN = Counter(
    "log_worker_batches_written", "Batches merged into the table (one commit each)", registry=REGISTRY
)
WRITE_FAILURES = Counter(
    "log_worker_write_failures",
    "Batch writes that failed while S3 did not answer (the batch was kept and written again)",
    registry=REGISTRY,
)
DEAD_LETTER_REASONS = ("invalid", "too_large", "unwritable")
DEAD_LETTERED = Counter(
    "log_worker_dead_lettered",
    "Records sent to the dead-letter queue: invalid (does not parse or validate), too_large (message over "
    "the size limit), unwritable (the table refused it while S3 answered)",
    ["reason"],
    registry=REGISTRY,
)
for _reason in DEAD_LETTER_REASONS:
    DEAD_LETTERED.labels(_reason)
BATCH_WRITE_SECONDS = Histogram(
    "log_worker_batch_write_seconds",
    "Time to write one batch to S3",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)

ERROR_HEADER = "x-inference-log-error"
ERROR_KIND_HEADER = "x-inference-log-error-kind"
_INITIAL_BACKOFF_S = 0.2
_MAX_REASON_CHARS = 1000


def reject_reason(err: Exception) -> str:
    if isinstance(err, ValidationError):
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in err.errors()[:5])
        reason = f"invalid inference-log record ({err.error_count()} errors): {details}"
    else:
        reason = f"invalid inference-log record: {err}"
    return reason[:_MAX_REASON_CHARS]


@dataclass(frozen=True)
class Reject:
    line: bytes
    reason: str
    kind: str  # one of DEAD_LETTER_REASONS
    # What ``line`` is: a record's JSON line, or a message of its own (a block, a message too large).
    content_type: str = MESSAGE_CONTENT_TYPE


@dataclass
class ParsedMessage:
    """The rows of a message's valid records (``TABLE_SCHEMA``), the index of each row's record in the
    message, and the records rejected with their reasons. ``lines`` are the message's records as JSON
    lines: for a message of blocks made only when read (to dead-letter a row the table refused)."""

    rows: pa.Table
    row_lines: list[int]
    rejects: list[Reject]
    source_lines: list[bytes] | Callable[[], list[bytes]] = field(default_factory=list)

    @property
    def lines(self) -> list[bytes]:
        if callable(self.source_lines):
            self.source_lines = self.source_lines()
        return self.source_lines


def _rejected(reject: Reject) -> ParsedMessage:
    return ParsedMessage(TABLE_SCHEMA.empty_table(), [], [reject])


def parse_message(
    body: bytes, content_type: str | None = MESSAGE_CONTENT_TYPE, *, max_bytes: int | None = None
) -> ParsedMessage:
    """A message of either form (``mlops_common.inference_log_wire``): blocks if its content type says
    so, else JSON lines."""
    if max_bytes is not None and len(body) > max_bytes:
        reason = f"message of {len(body)} bytes is over the limit of {max_bytes} bytes (MAX_MESSAGE_BYTES)"
        return _rejected(Reject(body, reason, "too_large", content_type or MESSAGE_CONTENT_TYPE))
    if content_type == BLOCKS_CONTENT_TYPE:
        return parse_blocks(body)
    lines = split_message(body)
    if not lines:
        return _rejected(Reject(body, "empty message", "invalid"))
    rows = lines_to_table(lines)
    if rows is not None:
        return ParsedMessage(rows, list(range(len(lines))), [], lines)
    # Some line is not a plain valid record: the model validates each, and says what is wrong.
    return parse_lines_with_model(lines)


def parse_blocks(body: bytes) -> ParsedMessage:
    """A message of blocks: read column by column when every record is valid (the usual message); a
    block that does not decode, or whose columns disagree, is rejected whole (as a message of its own);
    otherwise the model validates each record, and says what is wrong."""
    try:
        blocks, rejects = _decoded_blocks(body)
    except msgspec.DecodeError as err:
        reason = f"not a msgpack array of inference-log blocks: {err}"[:_MAX_REASON_CHARS]
        return _rejected(Reject(body, reason, "invalid", BLOCKS_CONTENT_TYPE))
    if not rejects and not any(block.rows for block in blocks):
        return _rejected(Reject(body, "empty message", "invalid", BLOCKS_CONTENT_TYPE))
    rows = blocks_to_table(blocks)
    if rows is not None:
        # The decoded blocks are not kept while the batch waits (objects per row, which the garbage collector
        # would walk at every pass): the lines, wanted only to dead-letter a row the table refused, are read
        # from the body again.
        return ParsedMessage(rows, list(range(rows.num_rows)), rejects, lambda: _lines_of(_decoded_blocks(body)[0]))
    parsed = parse_lines_with_model(_lines_of(blocks))
    parsed.rejects[:0] = rejects
    return parsed


def _decoded_blocks(body: bytes) -> tuple[list[WireBlock], list[Reject]]:
    """The message's blocks whose columns describe the same rows, and each other block rejected as a message
    of its own. Raises ``msgspec.DecodeError`` if the body is not a msgpack array."""
    rejects: list[Reject] = []
    try:
        decoded = decode_blocks(body)
    except msgspec.DecodeError:
        decoded, bad = split_blocks(body)
        rejects += [Reject(block, reason[:_MAX_REASON_CHARS], "invalid", BLOCKS_CONTENT_TYPE) for block, reason in bad]
    blocks = []
    for block in decoded:
        if error := block.shape_error():
            own = encode_blocks_message([block])
            rejects.append(
                Reject(own, f"invalid inference-log block: {error}"[:_MAX_REASON_CHARS], "invalid", BLOCKS_CONTENT_TYPE)
            )
        else:
            blocks.append(block)
    return blocks, rejects


def _lines_of(blocks: list[WireBlock]) -> list[bytes]:
    return [line for block in blocks for line in block_lines(block)]


def parse_lines_with_model(lines: list[bytes]) -> ParsedMessage:
    """Each line validated by ``InferenceLogRecord``, each bad one rejected with its reason."""
    records: list[InferenceLogRecord] = []
    row_lines: list[int] = []
    rejects: list[Reject] = []
    for index, line in enumerate(lines):
        try:
            records.append(InferenceLogRecord.from_json_bytes(line))
            row_lines.append(index)
        except ValueError as err:
            rejects.append(Reject(line, reject_reason(err), "invalid"))
    try:
        rows = records_to_table(records)
    except (pa.ArrowException, ValueError, TypeError):
        # Find the records Arrow refuses, one by one; the rest stay.
        kept, kept_lines = [], []
        for record, index in zip(records, row_lines, strict=True):
            try:
                records_to_table([record])
            except (pa.ArrowException, ValueError, TypeError) as err:
                rejects.append(
                    Reject(lines[index], f"record does not fit the table: {err}"[:_MAX_REASON_CHARS], "unwritable")
                )
            else:
                kept.append(record)
                kept_lines.append(index)
        rows, row_lines = records_to_table(kept), kept_lines
    return ParsedMessage(rows, row_lines, rejects, lines)


class StorageUnavailableError(Exception):
    """A write failed while S3 did not answer: the rows are not at fault."""


def write_isolating_failures(
    rows: pa.Table, write: Callable[[pa.Table], int], storage_answers: Callable[[], bool]
) -> tuple[int, list[tuple[int, str]]]:
    """Write ``rows``; if a write fails while storage answers, split the rows in halves and write each,
    down to single rows, so a row the table refuses takes no neighbour with it. Returns the number of
    rows inserted and the (position, reason) of each row that could not be written. Raises
    ``StorageUnavailableError`` if a write fails while storage does not answer (the parts written so
    far are committed; writing them again inserts nothing, the table being keyed)."""
    try:
        return write(rows), []
    except Exception as err:
        if not storage_answers():
            raise StorageUnavailableError(repr(err)) from err
        if rows.num_rows == 1:
            return 0, [(0, f"the table refused the record: {type(err).__name__}: {err}"[:_MAX_REASON_CHARS])]
        half = rows.num_rows // 2
        inserted_first, failed_first = write_isolating_failures(rows.slice(0, half), write, storage_answers)
        inserted_second, failed_second = write_isolating_failures(rows.slice(half), write, storage_answers)
        return inserted_first + inserted_second, failed_first + [(half + i, why) for i, why in failed_second]


@dataclass
class _Delivery:
    message: AbstractIncomingMessage
    parsed: ParsedMessage
    received: float

    @property
    def size(self) -> int:
        return self.parsed.rows.num_rows + len(self.parsed.rejects)


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
        # False from a write that failed with S3 silent until S3 answers again.
        self._s3_up = True
        # Opened once; each write brings it up to date (cheaper than reading the table afresh).
        self._table: DeltaTable | None = None

    def stop(self) -> None:
        """Finish gracefully: stop consuming, write what is in hand, return from ``run``."""
        self._stopping.set()
        self._arrived.set()

    async def run(self) -> None:
        await self._open_table()
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

    async def _open_table(self) -> None:
        """Wait for S3, then create the table if there is none. A table with other columns
        (``TableSchemaError``) is a deployment error: it propagates and the worker exits."""
        delay = _INITIAL_BACKOFF_S
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(ensure_bucket, self._s3, self._settings.logs_bucket)
                self._table = await asyncio.to_thread(
                    open_inference_log_table, self._settings, timeout_s=self._settings.s3_timeout_s
                )
                return
            except TableSchemaError:
                raise
            except Exception as err:
                log.warning(
                    "inference-log table %s not reachable yet (%r)", self._settings.inference_log_table_uri, err
                )
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
            log.info(
                "log worker consuming %s into %s (prefetch %d messages)",
                self._topology.queue,
                self._settings.inference_log_table_uri,
                self._settings.prefetch_count,
            )
            self._backoff = _INITIAL_BACKOFF_S
            await self._process(connection)
            await queue.cancel(consumer_tag)
            await self._drain()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        CONSUMED.inc()
        parsed = parse_message(message.body, message.content_type, max_bytes=self._settings.max_message_bytes)
        delivery = _Delivery(message, parsed, asyncio.get_running_loop().time())
        self._pending.append(delivery)
        self._pending_records += delivery.size
        # Wake the batcher to start the age timer, or because the batch is full.
        if len(self._pending) == 1 or self._batch_due():
            self._arrived.set()

    def _batch_due(self) -> bool:
        """A full batch, or a full prefetch window (nothing more arrives until something is acked)."""
        return (
            self._pending_records >= self._settings.batch_max_records
            or len(self._pending) >= self._settings.prefetch_count
        )

    async def _process(self, connection: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if connection.is_closed:
                raise _BrokerFailure("connection closed")
            wait: float | None = None
            if self._pending:
                if self._batch_due():
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
        """The oldest deliveries, all that wait up to ``batch_backlog_max_records`` records (at least one)."""
        limit = max(self._settings.batch_max_records, self._settings.batch_backlog_max_records)
        batch: list[_Delivery] = []
        size = 0
        while self._pending and (not batch or size + self._pending[0].size <= limit):
            delivery = self._pending.popleft()
            batch.append(delivery)
            size += delivery.size
        self._pending_records -= size
        return batch

    def _put_back(self, batch: list[_Delivery]) -> None:
        self._pending.extendleft(reversed(batch))
        self._pending_records += sum(delivery.size for delivery in batch)

    async def _flush_batch(self) -> bool:
        """Write, dead-letter and ack one batch; False when S3 did not answer (the batch is back in hand)."""
        batch = self._take_batch()
        rejects = [(d.message, reject) for d in batch for reject in d.parsed.rejects]
        if any(d.parsed.rows.num_rows for d in batch):
            rows = pa.concat_tables([d.parsed.rows for d in batch])
            started = time.perf_counter()
            try:
                inserted, failed = await asyncio.to_thread(
                    write_isolating_failures, rows, self._write, self._storage_answers
                )
            except StorageUnavailableError as err:
                self._s3_up = False
                WRITE_FAILURES.inc()
                log.warning("writing %d inference-log records failed, S3 does not answer (%s)", rows.num_rows, err)
                self._put_back(batch)
                return False
            BATCH_WRITE_SECONDS.observe(time.perf_counter() - started)
            BATCHES_WRITTEN.inc()
            RECORDS_WRITTEN.inc(inserted)
            RECORDS_ALREADY_WRITTEN.inc(rows.num_rows - inserted - len(failed))
            rejects += self._unwritable(batch, failed)
        await self._dead_letter(rejects)
        for delivery in batch:
            await delivery.message.ack()
        return True

    def _write(self, rows: pa.Table) -> int:
        return write_inference_log_rows(self._settings, rows, timeout_s=self._settings.s3_timeout_s, table=self._table)

    def _storage_answers(self) -> bool:
        try:
            self._s3.head_bucket(Bucket=self._settings.logs_bucket)
        except Exception:
            return False
        return True

    @staticmethod
    def _unwritable(
        batch: list[_Delivery], failed: list[tuple[int, str]]
    ) -> list[tuple[AbstractIncomingMessage, Reject]]:
        """The message and line of each row of the batch the table refused."""
        if not failed:
            return []
        owners = [(d, line) for d in batch for line in d.parsed.row_lines]
        rejects = []
        for position, reason in failed:
            delivery, line = owners[position]
            rejects.append((delivery.message, Reject(delivery.parsed.lines[line], reason, "unwritable")))
        return rejects

    async def _dead_letter(self, rejects: list[tuple[AbstractIncomingMessage, Reject]]) -> None:
        if not rejects:
            return
        assert self._dlx is not None
        results = await asyncio.gather(
            *(self._publish_reject(message, reject) for message, reject in rejects), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise _BrokerFailure(f"dead-lettering {len(failures)} records failed: {failures[0]!r}")
        for _, reject in rejects:
            DEAD_LETTERED.labels(reject.kind).inc()
            log.warning("dead-lettered an inference-log record: %s: %r", reject.reason, reject.line[:200])

    async def _publish_reject(self, message: AbstractIncomingMessage, reject: Reject) -> Any:
        assert self._dlx is not None
        headers = {
            ERROR_HEADER: reject.reason,
            ERROR_KIND_HEADER: reject.kind,
            "x-original-exchange": message.exchange or "",
            "x-original-routing-key": message.routing_key or "",
        }
        if message.message_id:
            headers["x-original-message-id"] = message.message_id
        return await self._dlx.publish(
            aio_pika.Message(
                reject.line,
                content_type=reject.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=headers,
            ),
            self._topology.dead_letter_queue,
            mandatory=True,
        )

    async def _wait_for_s3(self) -> None:
        """Back off until S3 answers (the batch and whatever else arrived wait in hand, unacked)."""
        delay = _INITIAL_BACKOFF_S
        while not self._stopping.is_set():
            await self._sleep(delay)
            if await asyncio.to_thread(self._storage_answers):
                log.info("S3 answers again; resuming writes")
                self._s3_up = True
                return
            delay = min(delay * 2, self._settings.s3_retry_max_s)
