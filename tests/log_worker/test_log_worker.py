"""The log worker on its own: batching by size and by age, acknowledgement only after the commit,
redeliveries inserting nothing, partitioning, failures told apart (S3 silent vs a refused record),
the memory bound, metrics, and the reader CLI."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from log_pipeline import (
    LogSetup,
    eventually,
    make_record,
    metric,
    running_worker,
    started_publisher,
    table_has_exactly,
    table_request_ids,
)
from tcp_proxy import TcpProxy

from log_worker import reader
from log_worker.settings import Settings as WorkerSettings
from log_worker.worker import (
    REGISTRY,
    LogWorker,
    ParsedMessage,
    Reject,
    StorageUnavailableError,
    _Delivery,
    parse_message,
    write_isolating_failures,
)
from mlops_common.inference_log import (
    MESSAGE_CONTENT_TYPE,
    TABLE_SCHEMA,
    InferenceLogRecord,
    encode_message,
    read_inference_logs,
    records_to_table,
)
from mlops_common.rabbit import declare_topology


def test_parse_message_separates_valid_records_from_rejects():
    good = [make_record(), make_record()]
    body = encode_message([good[0].to_json_bytes(), b"{oops", b"", good[1].to_json_bytes()])
    parsed = parse_message(body)
    assert parsed.rows == records_to_table(good)
    assert [parsed.lines[i] for i in parsed.row_lines] == [r.to_json_bytes() for r in good]
    assert [(r.line, r.kind) for r in parsed.rejects] == [(b"{oops", "invalid")]
    assert "invalid inference-log record" in parsed.rejects[0].reason
    assert [(r.line, r.reason) for r in parse_message(b"\n \n").rejects] == [(b"\n \n", "empty message")]
    too_large = parse_message(body, max_bytes=len(body) - 1)
    assert too_large.rows.num_rows == 0
    assert too_large.rejects[0].kind == "too_large"
    assert f"{len(body)} bytes" in too_large.rejects[0].reason


def test_a_refused_row_is_isolated_without_its_neighbours():
    """Pure logic of the split: a fake table that refuses the rows marked "poison"."""
    rows = records_to_table([make_record(f"ok-{i}") for i in range(5)] + [make_record("poison")])
    rows = rows.take([0, 1, 5, 2, 3, 4])  # the poison row third
    written: list[str] = []

    def write(part):
        ids = part["request_id"].to_pylist()
        if "poison" in ids:
            raise ValueError("refused")
        written.extend(ids)
        return len(ids)

    inserted, failed = write_isolating_failures(rows, write, lambda: True)
    assert inserted == 5
    assert sorted(written) == [f"ok-{i}" for i in range(5)]
    assert [(position, "refused" in why) for position, why in failed] == [(2, True)]

    def storage_down(part):
        raise OSError("connection refused")

    with pytest.raises(StorageUnavailableError):
        write_isolating_failures(rows, storage_down, lambda: False)


def test_a_write_takes_the_backlog_up_to_its_limit():
    """Pure logic of the batching: deliveries of 60 records each wait; a write takes the oldest ones."""
    worker = LogWorker(WorkerSettings(batch_max_records=100, batch_backlog_max_records=250))

    def wait(*sizes: int) -> None:
        for size in sizes:
            parsed = ParsedMessage(TABLE_SCHEMA.empty_table(), [], [Reject(b"{}", "test", "invalid")] * size)
            worker._pending.append(_Delivery(None, parsed, 0.0))  # type: ignore[arg-type]
            worker._pending_records += size

    wait(60, 60, 60, 60, 60)
    assert worker._batch_due()
    assert [d.size for d in worker._take_batch()] == [60, 60, 60, 60]
    assert (len(worker._pending), worker._pending_records) == (1, 60)
    assert not worker._batch_due()
    worker._take_batch()
    wait(400, 10)
    assert [d.size for d in worker._take_batch()] == [400]  # a delivery over the limit goes alone
    assert [d.size for d in worker._take_batch()] == [10]


def test_the_prefetch_window_is_sized_from_bytes():
    settings = WorkerSettings(max_held_bytes=64 << 20, max_message_bytes=256 << 10)
    assert settings.prefetch_count == 256


async def publish_raw(setup: LogSetup, bodies: list[bytes]) -> None:
    """One message per body, published and confirmed before returning (declares the topology: the
    worker may not have yet)."""
    connection = await aio_pika.connect(setup.rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange, _, _ = await declare_topology(channel, setup.topology)
        for body in bodies:
            message = aio_pika.Message(body, content_type=MESSAGE_CONTENT_TYPE)
            await exchange.publish(message, setup.topology.routing_key)


@pytest.mark.integration
async def test_full_batches_are_written_at_once_and_the_rest_on_stop(log_setup: LogSetup):
    records = [make_record() for _ in range(250)]
    async with started_publisher(log_setup.publisher_settings(log_message_max_records=10)) as publisher:
        for record in records:
            publisher.submit(record)
    assert publisher.stats.confirmed == 250
    batches = metric("log_worker_batches_written_total")

    # The age limit is far away: only full batches (100 records, 10 messages) are written; the backlog limit
    # keeps a write to one batch.
    settings = log_setup.worker_settings(batch_max_records=100, batch_backlog_max_records=100, batch_max_age_s=600)
    async with running_worker(settings):
        await eventually(lambda: table_has_exactly(log_setup, {r.request_id for r in records[:200]}), what="2 batches")
        assert metric("log_worker_batches_written_total") == batches + 2
    # Stopping flushed the partial batch.
    assert await table_has_exactly(log_setup, {r.request_id for r in records})
    assert metric("log_worker_batches_written_total") == batches + 3


@pytest.mark.integration
async def test_a_partial_batch_is_written_when_it_is_old_enough(log_setup: LogSetup):
    records = [make_record() for _ in range(30)]
    async with running_worker(log_setup.worker_settings(batch_max_records=10_000, batch_max_age_s=0.3)):
        await publish_raw(log_setup, [encode_message([r.to_json_bytes() for r in records])])
        # No further message arrives: the timer alone flushes the batch.
        await eventually(lambda: table_has_exactly(log_setup, {r.request_id for r in records}), what="the timed flush")


@pytest.mark.integration
async def test_a_batch_delivered_again_inserts_nothing(log_setup: LogSetup):
    records = [make_record() for _ in range(20)]
    body = encode_message([r.to_json_bytes() for r in records])
    settings = log_setup.worker_settings(batch_max_records=20, batch_max_age_s=0.2)
    async with running_worker(settings):
        await publish_raw(log_setup, [body])
        await eventually(lambda: table_has_exactly(log_setup, {r.request_id for r in records}), what="the first write")
        written, again = metric("log_worker_records_written_total"), metric("log_worker_records_already_written_total")
        # The same batch again (as after a write whose acks were lost), in another order, with one new record.
        extra = make_record()
        await publish_raw(log_setup, [encode_message([r.to_json_bytes() for r in [extra, *reversed(records)]])])
        await eventually(
            lambda: metric("log_worker_records_already_written_total") >= again + 20, what="the second delivery"
        )
    assert metric("log_worker_records_written_total") == written + 1
    assert await table_has_exactly(log_setup, {r.request_id for r in [*records, extra]})


@pytest.mark.integration
async def test_records_are_partitioned_by_model_version_and_date(log_setup: LogSetup):
    hour = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    records = [
        make_record("a1", timestamp=hour - timedelta(microseconds=1)),
        make_record("a2", timestamp=hour),
        make_record("a3", timestamp=hour + timedelta(minutes=59)),
        make_record("b1", timestamp=hour, model_version="2"),
    ]
    async with running_worker(log_setup.worker_settings(batch_max_age_s=0.2)):
        await publish_raw(log_setup, [encode_message([r.to_json_bytes() for r in records])])
        await eventually(lambda: table_has_exactly(log_setup, {"a1", "a2", "a3", "b1"}), what="the batch")
    keys = sorted(await asyncio.to_thread(data_file_keys, log_setup))
    partitions = sorted({key.rsplit("/", 1)[0] for key in keys})
    assert partitions == [
        "inference-logs/model_name=credit_default/model_version=1/date=2026-03-01",
        "inference-logs/model_name=credit_default/model_version=1/date=2026-03-02",
        "inference-logs/model_name=credit_default/model_version=2/date=2026-03-02",
    ]
    frame = await asyncio.to_thread(
        read_inference_logs, log_setup.worker_settings(), hour - timedelta(hours=1), hour + timedelta(hours=1)
    )
    assert list(frame["request_id"]) == ["a1", "a2", "b1", "a3"]
    by_id = {r.request_id: r for r in records}
    for row in frame.to_dict("records"):
        assert (
            InferenceLogRecord(
                request_id=row["request_id"],
                timestamp=row["timestamp"].to_pydatetime(),
                entity_id=row["entity_id"],
                features={name: row[name] for name in by_id["a1"].features},
                store_features=list(row["store_features"]),
                model_name=row["model_name"],
                model_version=row["model_version"],
                probability=row["probability"],
                decision=row["decision"],
                latency_ms=row["latency_ms"],
            )
            == by_id[row["request_id"]]
        )


def data_file_keys(setup: LogSetup) -> list[str]:
    client = setup.s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=setup.bucket, Prefix=setup.prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return [key for key in keys if key.endswith(".parquet") and "/_delta_log/" not in key]


@pytest.mark.integration
async def test_nothing_is_acknowledged_before_it_is_in_s3(log_setup: LogSetup, s3_proxy: TcpProxy):
    settings = log_setup.worker_settings(s3_endpoint_url=f"http://127.0.0.1:{s3_proxy.port}", batch_max_age_s=0.2)
    first = [make_record() for _ in range(10)]
    held = [make_record() for _ in range(100)]
    failures = metric("log_worker_write_failures_total")
    async with running_worker(settings):
        await publish_raw(log_setup, [encode_message([r.to_json_bytes() for r in first])])
        await eventually(lambda: table_has_exactly(log_setup, {r.request_id for r in first}), what="the first batch")
        s3_proxy.down()
        await publish_raw(log_setup, [r.to_json_bytes() for r in held])
        await eventually(lambda: metric("log_worker_write_failures_total") > failures, what="a failed write")
    # The worker stopped while S3 was down: every held record is back in the queue, none was acked.
    connection = await aio_pika.connect(log_setup.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(log_setup.topology.queue)
        queued = []
        while (message := await queue.get(fail=False)) is not None:
            queued.extend(InferenceLogRecord.from_json_bytes(line).request_id for line in message.body.split(b"\n"))
            await message.ack()
    assert sorted(set(queued)) == sorted(r.request_id for r in held)


@pytest.mark.integration
async def test_worker_metrics_are_registered(log_setup: LogSetup):
    records = [make_record() for _ in range(5)]
    async with running_worker(log_setup.worker_settings(batch_max_age_s=0.2)):
        consumed = metric("log_worker_messages_consumed_total")
        await publish_raw(log_setup, [encode_message([r.to_json_bytes() for r in records])])
        await eventually(lambda: table_has_exactly(log_setup, {r.request_id for r in records}), what="the batch")
    assert metric("log_worker_messages_consumed_total") == consumed + 1
    for name in (
        "log_worker_batches_written_total",
        "log_worker_records_written_total",
        "log_worker_batch_write_seconds_count",
    ):
        assert metric(name) > 0, name
    assert REGISTRY.get_sample_value("log_worker_write_failures_total") is not None
    for reason in ("invalid", "too_large", "unwritable"):
        assert REGISTRY.get_sample_value("log_worker_dead_lettered_total", {"reason": reason}) is not None, reason


@pytest.mark.integration
async def test_reader_cli_prints_the_table_and_row_count(log_setup: LogSetup, monkeypatch, capsys):
    now = datetime.now(UTC)
    records = [make_record(timestamp=now - timedelta(minutes=5)) for _ in range(7)]
    async with running_worker(log_setup.worker_settings(batch_max_age_s=0.2)):
        await publish_raw(log_setup, [encode_message([r.to_json_bytes() for r in records])])
        await eventually(lambda: table_has_exactly(log_setup, {r.request_id for r in records}), what="the batch")
        # One record again, in a message of its own: still one row.
        again = metric("log_worker_records_already_written_total")
        await publish_raw(log_setup, [records[0].to_json_bytes()])
        await eventually(lambda: metric("log_worker_records_already_written_total") > again, what="the duplicate")
    for key, value in log_setup.worker_env().items():
        monkeypatch.setenv(key, value)
    assert await asyncio.to_thread(reader.main, ["--since", "1h"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"table s3://{log_setup.bucket}/{log_setup.prefix}"
    assert out[1].startswith("7 inference-log rows (7 distinct request ids) from 1 data files, ")
    assert await asyncio.to_thread(table_request_ids, log_setup)

    with pytest.raises(SystemExit) as exit_info:
        reader.main(["--since", "yesterday"])
    assert exit_info.value.code == 2
    assert "--since/--until" in capsys.readouterr().err
