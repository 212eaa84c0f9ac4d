"""Fixtures for the inference-log pipeline tests: the BFF's publisher and the log worker on the real
RabbitMQ (the session's vhost) and SeaweedFS, with names, a bucket and a spool of each test's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import pytest
from log_pipeline import LogSetup, delete_topology, empty_bucket
from tcp_proxy import TcpProxy

from devstack.components import S3Server
from mlops_common.rabbit import InferenceLogTopology


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[TcpProxy]:
    parts = urlsplit(s3_server.endpoint_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 80).start()
    yield proxy
    proxy.close()


@pytest.fixture
async def log_setup(
    rabbitmq_url: str, s3_server: S3Server, unique_name: Callable[..., str], tmp_path
) -> AsyncIterator[LogSetup]:
    setup = LogSetup(
        rabbitmq_url=rabbitmq_url,
        topology=InferenceLogTopology(unique_name("inference-logs"), unique_name("inference-logs")),
        bucket=s3_server.new_bucket("logs"),
        prefix="inference-logs",
        spool_dir=str(tmp_path / "spool"),
        s3=s3_server,
    )
    yield setup
    await delete_topology(rabbitmq_url, setup.topology)
    await asyncio.to_thread(empty_bucket, s3_server, setup.bucket)
