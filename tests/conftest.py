"""Session-scoped infrastructure for every test.

Each test session runs its own SeaweedFS, MLflow and Triton on free ports with state in a temporary
directory, and uses the machine's PostgreSQL, Redis and RabbitMQ (started if down) under names of its
own: a fresh database per DSN, a RabbitMQ vhost for the session, unique buckets, Feast projects and
queue names per ``platform_env``. Nothing touches the fixed-port stack (``make stack-up``) or state
from earlier runs, and servers are stopped at the end even when a test or a start fails; a server
killed with the session (SIGKILL) follows it (``die_with_parent``). Servers start lazily, on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tcp_proxy import TcpProxy

from devstack import system_services as sys_svc
from devstack.components import (
    MlflowServer,
    S3Server,
    SeaweedPorts,
    TritonServer,
    start_mlflow,
    start_seaweedfs,
    start_triton,
)
from devstack.processes import free_port, pid_alive
from devstack.settings import Settings

pytest_plugins = ["platform_fixtures", "serving_fixtures"]

log = logging.getLogger("tests.infra")

# Databases and vhosts are named after the session's pid so a later session can tell the leftovers
# of a killed one (owner pid gone) from those of a session running beside it.
SESSION_PREFIX = "pytest_"
SESSION_TAG = f"{SESSION_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"


def _owner_gone(name: str) -> bool:
    """True for ``pytest_<pid>_…`` resources whose creating session is no longer running."""
    parts = name.removeprefix(SESSION_PREFIX).split("_", 1)
    return name.startswith(SESSION_PREFIX) and parts[0].isdigit() and not pid_alive(int(parts[0]))


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """Addresses of the machine's system services (the stack's settings; its ports are not used)."""
    return Settings()


@pytest.fixture(scope="session")
def unique_name() -> Callable[..., str]:
    """``unique_name("feast", sep="_")`` -> ``feast_3f9a1c2b``: 8 random hex chars after a prefix."""

    def make(prefix: str = "t", sep: str = "-") -> str:
        return f"{prefix}{sep}{secrets.token_hex(4)}"

    return make


@pytest.fixture(scope="session")
def infra_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


# -- system services ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_admin_dsn(stack_settings: Settings) -> str:
    s = stack_settings
    dsn = sys_svc.ensure_postgres_for(s)
    for name in sys_svc.list_databases(dsn, SESSION_PREFIX):
        if _owner_gone(name):
            log.info("dropping %s, left by a test session that no longer runs", name)
            sys_svc.drop_database(dsn, name)
    return dsn


@pytest.fixture(scope="session")
def postgres_dsn_factory(postgres_admin_dsn: str, stack_settings: Settings) -> Iterator[Callable[..., str]]:
    """``factory(driver="postgresql")`` creates a fresh database and returns its DSN
    (``driver="postgresql+psycopg2"`` for SQLAlchemy/MLflow); all are dropped at session end."""
    s = stack_settings
    created: list[str] = []

    def make(driver: str = "postgresql") -> str:
        name = f"{SESSION_TAG}_{len(created)}"
        sys_svc.create_database(postgres_admin_dsn, name)
        created.append(name)
        return sys_svc.postgres_dsn(
            name, user=s.postgres_admin_user, host=s.postgres_host, port=s.postgres_port, driver=driver
        )

    yield make
    for name in created:
        with contextlib.suppress(Exception):
            sys_svc.drop_database(postgres_admin_dsn, name)


@pytest.fixture(scope="session")
def redis_url(stack_settings: Settings) -> str:
    """The machine's Redis (shared: namespace keys, e.g. a unique Feast project)."""
    host, port = stack_settings.redis_host_port
    sys_svc.ensure_redis(host, port, install=stack_settings.install_missing)
    return f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def rabbitmq_url(stack_settings: Settings) -> Iterator[str]:
    """AMQP URL of a vhost of this session's own (deleted at the end) on the machine's RabbitMQ."""
    host, port = stack_settings.rabbitmq_host_port
    sys_svc.ensure_rabbitmq(host, port, install=stack_settings.install_missing)
    for vhost in sys_svc.list_vhosts():
        if _owner_gone(vhost):
            with contextlib.suppress(sys_svc.SystemServiceError):
                sys_svc.delete_vhost(vhost)
    sys_svc.create_vhost(SESSION_TAG)
    try:
        yield f"amqp://guest:guest@{host}:{port}/{SESSION_TAG}"
    finally:
        with contextlib.suppress(sys_svc.SystemServiceError):
            sys_svc.delete_vhost(SESSION_TAG)


# -- our own servers ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server(infra_dir: Path) -> Iterator[S3Server]:
    """A private SeaweedFS: ``.endpoint_url``, ``.access_key``, ``.secret_key``, ``.client()``,
    ``.settings()`` (S3Settings), ``.env()``, ``.new_bucket(prefix)`` -> a fresh bucket's name."""
    server = start_seaweedfs(
        infra_dir / "seaweedfs",
        SeaweedPorts.free(),
        access_key=f"test-{secrets.token_hex(4)}",
        secret_key=secrets.token_hex(16),
        log_path=infra_dir / "logs" / "seaweedfs.log",
        die_with_parent=True,
    )
    # Test data is throwaway: no need to wait for a graceful flush at the end.
    server.daemon.stop_timeout_s = 5.0
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(
    s3_server: S3Server, postgres_dsn_factory: Callable[..., str], infra_dir: Path
) -> Iterator[MlflowServer]:
    """A private MLflow server (``.tracking_uri``) on a fresh PostgreSQL database, artifacts proxied
    into a bucket of its own."""
    bucket = s3_server.new_bucket("mlflow")
    server = start_mlflow(
        postgres_dsn_factory(driver="postgresql+psycopg2"),
        f"s3://{bucket}/artifacts",
        free_port(),
        s3_server.env(),
        infra_dir / "logs" / "mlflow.log",
        cwd=infra_dir,
        die_with_parent=True,
        timeout_s=180.0,
    )
    try:
        yield server
    finally:
        # Before the database is dropped (postgres_dsn_factory's teardown runs after this).
        server.stop()


@pytest.fixture(scope="session")
def triton_server(infra_dir: Path, stack_settings: Settings) -> Iterator[TritonServer]:
    """A private Triton (explicit model control) with an empty model repository of its own:
    ``.http_url``/``.grpc_url`` (host:port, as TRITON_*_URL), ``.base_url``, ``.metrics_url``,
    ``.model_repository``."""
    server = start_triton(
        infra_dir / "model_repository",
        free_port(),
        free_port(),
        free_port(),
        infra_dir / "logs" / "triton.log",
        home_dir=infra_dir / "triton-home",
        triton_venv=stack_settings.triton_venv,
        die_with_parent=True,
    )
    try:
        yield server
    finally:
        server.stop()
        # ~30 MB copy of the server: not worth keeping in pytest's retained temp directories.
        shutil.rmtree(infra_dir / "triton-home", ignore_errors=True)


# -- the platform's environment -------------------------------------------------------------------
@pytest.fixture(scope="session")
def platform_env_factory(
    s3_server: S3Server,
    mlflow_server: MlflowServer,
    triton_server: TritonServer,
    redis_url: str,
    rabbitmq_url: str,
    postgres_dsn_factory: Callable[..., str],
    unique_name: Callable[..., str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[], dict[str, str]]:
    """Each call: environment variables for the platform's settings pointing at this session's
    servers, with fresh buckets, a unique Feast project and registry, unique queue, experiment and
    model names, and free ports for the services' own listeners."""
    redis_host_port = redis_url.removeprefix("redis://").split("/", 1)[0]
    # One jobs database for the session (job ids are unique); each environment has a job queue of its own.
    jobs_database_url = postgres_dsn_factory()

    def make() -> dict[str, str]:
        work = tmp_path_factory.mktemp("platform")
        return {
            **{k: v for k, v in s3_server.env().items() if k != "MLFLOW_S3_ENDPOINT_URL"},
            "RAW_BUCKET": s3_server.new_bucket("raw"),
            "OFFLINE_BUCKET": s3_server.new_bucket("offline"),
            "LOGS_BUCKET": s3_server.new_bucket("logs"),
            "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
            "MLFLOW_EXPERIMENT_NAME": unique_name("experiment"),
            "REGISTERED_MODEL_NAME": unique_name("model"),
            "FEAST_PROJECT": unique_name("test", sep="_"),
            "FEAST_REGISTRY_PATH": str(work / "registry.db"),
            "FEAST_SQLITE_PATH": str(work / "online.db"),
            "FEAST_REDIS_CONNECTION": f"{redis_host_port},db=0",
            "FEAST_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "TRITON_GRPC_URL": triton_server.grpc_url,
            "TRITON_HTTP_URL": triton_server.http_url,
            "TRITON_MODEL_NAME": unique_name("model", sep="_"),
            "MODEL_REPOSITORY": str(triton_server.model_repository),
            "RABBITMQ_URL": rabbitmq_url,
            "INFERENCE_LOG_EXCHANGE": unique_name("inference-logs"),
            "INFERENCE_LOG_QUEUE": unique_name("inference-logs"),
            "JOBS_DATABASE_URL": jobs_database_url,
            "JOBS_QUEUE": unique_name("jobs"),
            "JOB_LOG_DIR": str(work / "jobs"),
            "BFF_HOST": "127.0.0.1",
            "BFF_PORT": str(free_port()),
            "BFF_METRICS_PORT": str(free_port()),
            # One worker process: tests count what one process admits, spools and drains;
            # tests/bff/test_bff_workers.py runs several.
            "BFF_WORKERS": "1",
            "LOG_SPOOL_DIR": str(work / "log-spool"),
            "MODEL_SYNC_METRICS_PORT": str(free_port()),
            "LOG_WORKER_METRICS_PORT": str(free_port()),
            "MONITOR_METRICS_PORT": str(free_port()),
            "JOB_WORKER_METRICS_PORT": str(free_port()),
        }

    return make


@pytest.fixture
def platform_env(platform_env_factory: Callable[[], dict[str, str]]) -> dict[str, str]:
    """A fresh ``platform_env_factory()`` for this test: apply with
    ``for k, v in platform_env.items(): monkeypatch.setenv(k, v)`` or pass to a subprocess."""
    return platform_env_factory()


@pytest.fixture
def rabbit_proxy(rabbitmq_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the machine's RabbitMQ: ``down()``, ``stall()`` and ``up()`` cut the broker
    for whoever connects through ``via_proxy(rabbitmq_url, proxy)``."""
    parts = urlsplit(rabbitmq_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    yield proxy
    proxy.close()
