"""Helpers for the inference-log pipeline tests (fixtures are in conftest.py): per-test settings,
a record factory, a continuous producer, and ways to look into the table (DuckDB) and the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from typing import Any

import aio_pika
import duckdb
import pytest

from bff.inference_log import InferenceLogPublisher
from bff.settings import Settings as BffSettings
from devstack.components import S3Server
from devstack.processes import free_port
from log_worker.settings import Settings as WorkerSettings
from log_worker.worker import REGISTRY, LogWorker
from mlops_common.duckdb_s3 import connect_duckdb
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import InferenceLogRecord
from mlops_common.rabbit import InferenceLogTopology


# -- names, settings, records ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LogSetup:
    """One test's topology, bucket and spool, and settings for the publisher and the worker."""

    rabbitmq_url: str
    topology: InferenceLogTopology
    bucket: str
    prefix: str
    spool_dir: str
    s3: S3Server

    def publisher_settings(self, *, rabbitmq_url: str | None = None, **overrides: Any) -> BffSettings:
        values = {
            "rabbitmq_url": rabbitmq_url or self.rabbitmq_url,
            "inference_log_exchange": self.topology.exchange,
            "inference_log_queue": self.topology.queue,
            "log_spool_dir": self.spool_dir,
            "log_publish_timeout_s": 1.0,
            "log_connect_timeout_s": 1.0,
            "log_reconnect_max_s": 0.5,
            "log_publish_linger_s": 0.005,
            **overrides,
        }
        return BffSettings(**values)

    def worker_env(self, *, rabbitmq_url: str | None = None, s3_endpoint_url: str | None = None) -> dict[str, str]:
        """Environment of a ``python -m log_worker`` for this setup."""
        return {
            **{k: v for k, v in self.s3.env().items() if k != "MLFLOW_S3_ENDPOINT_URL"},
            "S3_ENDPOINT_URL": s3_endpoint_url or self.s3.endpoint_url,
            "RABBITMQ_URL": rabbitmq_url or self.rabbitmq_url,
            "INFERENCE_LOG_EXCHANGE": self.topology.exchange,
            "INFERENCE_LOG_QUEUE": self.topology.queue,
            "LOGS_BUCKET": self.bucket,
            "LOGS_PREFIX": self.prefix,
            "BATCH_MAX_RECORDS": "500",
            "BATCH_MAX_AGE_S": "0.2",
            "S3_TIMEOUT_S": "2",
            "S3_RETRY_MAX_S": "0.5",
            "RECONNECT_MAX_S": "0.5",
            "LOG_WORKER_METRICS_PORT": str(free_port()),
            "LOG_LEVEL": "INFO",
        }

    def worker_settings(self, **overrides: Any) -> WorkerSettings:
        env = self.worker_env(
            rabbitmq_url=overrides.pop("rabbitmq_url", None), s3_endpoint_url=overrides.pop("s3_endpoint_url", None)
        )
        values = {k.lower(): v for k, v in env.items() if k.lower() in WorkerSettings.model_fields}
        return WorkerSettings(**{**values, **overrides})


async def delete_topology(url: str, topology: InferenceLogTopology) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in (topology.queue, topology.dead_letter_queue):
            await channel.queue_delete(queue)
        for exchange in (topology.exchange, topology.dead_letter_exchange):
            await channel.exchange_delete(exchange)


def empty_bucket(s3: S3Server, bucket: str) -> None:
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


_sequence = count()


def make_record(
    request_id: str | None = None, *, timestamp: datetime | None = None, **fields: Any
) -> InferenceLogRecord:
    n = next(_sequence)
    values: dict[str, Any] = {
        "request_id": request_id or f"req-{n}",
        "timestamp": timestamp or datetime.now(UTC),
        "entity_id": 100000 + n,
        "features": {name: float(i * n) for i, name in enumerate(FEATURE_NAMES)},
        "store_features": list(FEATURE_NAMES[5:]),
        "model_name": "credit_default",
        "model_version": "1",
        "probability": 0.25,
        "decision": "approve",
        "latency_ms": 3.5,
        **fields,
    }
    return InferenceLogRecord(**values)


# -- observing ------------------------------------------------------------------------------------------
async def eventually(predicate: Callable[[], Any], *, within: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` (sync, or async returning a bool) until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def table_request_ids(setup: LogSetup) -> list[str]:
    """Every request id in the inference-log table as DuckDB's Delta reader sees it, duplicates
    included (none, when the table is right); empty before the table exists."""
    settings = setup.worker_settings()
    con = connect_duckdb(settings)
    uri = settings.inference_log_table_uri
    try:
        return [row[0] for row in con.sql(f"SELECT request_id FROM delta_scan('{uri}')").fetchall()]
    except duckdb.Error as err:
        if "_delta_log" in str(err) or "No files in log segment" in str(err):
            return []
        raise


async def table_has_exactly(setup: LogSetup, expected: set[str]) -> bool:
    """The table holds each expected request id exactly once and nothing else (asserted), or not yet
    all of them (False)."""
    found = await asyncio.to_thread(table_request_ids, setup)
    unexpected = set(found) - expected
    assert not unexpected, f"request ids in the table that were never submitted: {sorted(unexpected)[:5]}"
    assert len(found) == len(set(found)), f"{len(found) - len(set(found))} request ids are in the table twice"
    return set(found) == expected


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- running the pieces ---------------------------------------------------------------------------------
class Producer:
    """Submits records continuously (``batch`` per tick) until stopped; the ids it submitted."""

    def __init__(self, publisher: InferenceLogPublisher, *, batch: int = 5, tick_s: float = 0.005) -> None:
        self.publisher = publisher
        self.batch = batch
        self.tick_s = tick_s
        self.ids: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._prefix = f"p{next(_sequence)}"

    def start(self) -> Producer:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(self.batch):
                record = make_record(f"{self._prefix}-{len(self.ids)}")
                # The request path: submit must neither block nor raise, whatever the broker does.
                self.publisher.submit(record)
                self.ids.append(record.request_id)
            await asyncio.sleep(self.tick_s)

    async def wait_for_more(self, n: int) -> None:
        target = len(self.ids) + n
        await eventually(lambda: len(self.ids) >= target, what=f"{n} more submissions")

    async def stop(self) -> set[str]:
        self._stop.set()
        assert self._task is not None
        await self._task
        assert len(set(self.ids)) == len(self.ids)
        return set(self.ids)


@contextlib.asynccontextmanager
async def running_worker(settings: WorkerSettings) -> AsyncIterator[LogWorker]:
    worker = LogWorker(settings)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


@contextlib.asynccontextmanager
async def started_publisher(settings: BffSettings) -> AsyncIterator[InferenceLogPublisher]:
    publisher = InferenceLogPublisher(settings)
    await publisher.start()
    try:
        yield publisher
    finally:
        await publisher.close(5.0)
