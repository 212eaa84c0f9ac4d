"""The machine's own PostgreSQL, Redis and RabbitMQ: check, start if down, create databases/vhosts.

These run as system services (started before a session begins, CI reuses them as left), so devstack
only starts them when they do not answer and never stops them. Each ``ensure_*`` returns once the
service answers a real protocol request, not merely an open port.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import psycopg2
import redis

if TYPE_CHECKING:
    from devstack.settings import Settings
from psycopg2 import sql

from devstack.processes import http_ok, wait_until_healthy

log = logging.getLogger(__name__)

POSTGRES_CONF_DIR = Path("/etc/postgresql")


class SystemServiceError(RuntimeError):
    pass


class MissingDependencyError(SystemServiceError):
    """A system binary is absent and cannot be installed from here; the message says how."""


# -- probes ---------------------------------------------------------------------------------------
def _exchange(host: str, port: int, payload: bytes, timeout_s: float) -> bytes:
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(payload)
            return sock.recv(64)
    except OSError:
        return b""


def redis_ready(host: str = "127.0.0.1", port: int = 6379, timeout_s: float = 1.0) -> bool:
    # -NOAUTH/-LOADING also come from a live server, but only +PONG means it serves commands.
    return _exchange(host, port, b"PING\r\n", timeout_s).startswith(b"+PONG")


def rabbitmq_ready(host: str = "127.0.0.1", port: int = 5672, timeout_s: float = 1.0) -> bool:
    # An AMQP 0-9-1 protocol header is answered with a Connection.Start method frame (type 1).
    return _exchange(host, port, b"AMQP\x00\x00\x09\x01", timeout_s)[:1] == b"\x01"


def postgres_ready(dsn: str, timeout_s: float = 2.0) -> bool:
    try:
        psycopg2.connect(dsn, connect_timeout=max(1, int(timeout_s))).close()
    except psycopg2.OperationalError:
        return False
    return True


def postgres_dsn(
    database: str,
    *,
    user: str = "postgres",
    host: str = "127.0.0.1",
    port: int = 5432,
    password: str | None = None,
    driver: str = "postgresql",
) -> str:
    """``driver`` ``postgresql+psycopg2`` gives the SQLAlchemy URL MLflow needs."""
    auth = f"{quote(user)}:{quote(password)}" if password else quote(user)
    return f"{driver}://{auth}@{host}:{port}/{quote(database)}"


# -- installing and starting ----------------------------------------------------------------------
def require_binary(binary: str, package: str, *, install: bool = True) -> str:
    """Path of ``binary``; apt-get installs ``package`` when absent and we are root."""
    found = shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/sbin") / binary, Path("/usr/bin") / binary) if p.exists()), None
    )
    if found:
        return found
    command = f"apt-get update && apt-get install -y {package}"
    if not install or os.geteuid() != 0:
        raise MissingDependencyError(f"`{binary}` is not installed; install it with: sudo sh -c '{command}'")
    log.warning("%s is missing; running: %s", binary, command)
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
    found = shutil.which(binary)
    if result.returncode != 0 or not found:
        raise MissingDependencyError(
            f"installing {package} failed (exit {result.returncode}):\n{result.stderr[-2000:]}"
        )
    return found


def _run(argv: Sequence[str], what: str, timeout_s: float = 120.0) -> None:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as err:
        raise SystemServiceError(f"{what}: `{' '.join(argv)}` timed out after {timeout_s:.0f}s") from err
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-2000:]
        raise SystemServiceError(f"{what}: `{' '.join(argv)}` failed (exit {result.returncode}):\n{output}")


def _wait(check: Callable[[], bool], timeout_s: float, what: str, hint: str) -> None:
    try:
        wait_until_healthy(check, timeout_s, interval_s=0.3, describe=what)
    except TimeoutError as err:
        raise SystemServiceError(f"{err}; {hint}") from err


def postgres_versions() -> list[str]:
    if not POSTGRES_CONF_DIR.is_dir():
        return []
    return sorted((p.name for p in POSTGRES_CONF_DIR.iterdir() if p.is_dir()), key=lambda v: float(v))


def ensure_postgres(
    host: str = "127.0.0.1",
    port: int = 5432,
    *,
    admin_user: str = "postgres",
    admin_database: str = "postgres",
    timeout_s: float = 60.0,
    install: bool = True,
) -> str:
    """Make PostgreSQL answer; returns the admin DSN."""
    dsn = postgres_dsn(admin_database, user=admin_user, host=host, port=port)
    if postgres_ready(dsn):
        return dsn
    pg_ctlcluster = require_binary("pg_ctlcluster", "postgresql", install=install)
    versions = postgres_versions()
    if not versions:
        raise MissingDependencyError(
            f"no PostgreSQL cluster under {POSTGRES_CONF_DIR}; create one with pg_createcluster"
        )
    command = [pg_ctlcluster, "--skip-systemctl-redirect", versions[-1], "main", "start"]
    log.info("PostgreSQL does not answer at %s:%s; starting it: %s", host, port, " ".join(command))
    try:
        _run(command, "starting PostgreSQL", timeout_s)
    except SystemServiceError as err:
        # "already running" with a wrong port or auth: the wait below gives the better message.
        log.warning("%s", err)
    _wait(
        lambda: postgres_ready(dsn),
        timeout_s,
        f"PostgreSQL ({dsn})",
        f"check /var/log/postgresql/ and that {admin_user} may connect from {host} (trust auth)",
    )
    return dsn


def ensure_redis(host: str = "127.0.0.1", port: int = 6379, *, timeout_s: float = 30.0, install: bool = True) -> None:
    if redis_ready(host, port):
        return
    redis_server = require_binary("redis-server", "redis-server", install=install)
    # The machine's own start command: no persistence, the same log file the machine uses.
    log_dir = Path("/var/log/redis")
    log_file = log_dir / "ci.log" if log_dir.is_dir() else Path("/tmp/redis-devstack.log")
    data_dir = Path("/var/lib/redis") if Path("/var/lib/redis").is_dir() else Path("/tmp")
    bind = [host, "-::1"] if host == "127.0.0.1" else [host]
    command = [redis_server, "--daemonize", "yes", "--bind", *bind, "--port", str(port), "--save", ""]
    command += ["--appendonly", "no", "--dir", str(data_dir), "--logfile", str(log_file)]
    log.info("Redis does not answer at %s:%s; starting it", host, port)
    _run(command, "starting Redis", timeout_s)
    _wait(lambda: redis_ready(host, port), timeout_s, f"Redis ({host}:{port})", f"see {log_file}")


def ensure_rabbitmq(
    host: str = "127.0.0.1", port: int = 5672, *, timeout_s: float = 90.0, install: bool = True
) -> None:
    if rabbitmq_ready(host, port):
        return
    server = require_binary("rabbitmq-server", "rabbitmq-server", install=install)
    log.info("RabbitMQ does not answer at %s:%s; starting it", host, port)
    _run([server, "-detached"], "starting RabbitMQ", timeout_s)
    ctl = require_binary("rabbitmqctl", "rabbitmq-server", install=install)
    _run([ctl, "await_startup", "--timeout", str(int(timeout_s))], "waiting for RabbitMQ", timeout_s + 10)
    _wait(lambda: rabbitmq_ready(host, port), timeout_s, f"RabbitMQ ({host}:{port})", "see /var/log/rabbitmq/")


def ensure_rabbitmq_prometheus(host: str, port: int = 15692, *, timeout_s: float = 60.0) -> None:
    """RabbitMQ's own Prometheus endpoint (queue depth, unacked, dead letters): the plugin ships
    with the server, disabled."""
    url = f"http://{host}:{port}/metrics"
    if http_ok(url):
        return
    plugins = require_binary("rabbitmq-plugins", "rabbitmq-server", install=False)
    log.info("enabling RabbitMQ's rabbitmq_prometheus plugin")
    _run([plugins, "enable", "rabbitmq_prometheus"], "enabling rabbitmq_prometheus", timeout_s)
    _wait(lambda: http_ok(url), timeout_s, f"RabbitMQ metrics ({url})", "see /var/log/rabbitmq/")


# -- PostgreSQL databases and roles ---------------------------------------------------------------
def _admin_execute(admin_dsn: str, statement: sql.Composable, params: Sequence[object] = ()) -> list[tuple]:
    conn = psycopg2.connect(admin_dsn, connect_timeout=5)
    try:
        # CREATE/DROP DATABASE cannot run inside a transaction block.
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def ensure_role(admin_dsn: str, role: str, password: str | None = None) -> None:
    exists = _admin_execute(admin_dsn, sql.SQL("SELECT 1 FROM pg_roles WHERE rolname = %s"), [role])
    verb = sql.SQL("ALTER ROLE") if exists else sql.SQL("CREATE ROLE")
    statement = sql.SQL("{} {} LOGIN").format(verb, sql.Identifier(role))
    if password is not None:
        statement = sql.SQL("{} PASSWORD {}").format(statement, sql.Literal(password))
    _admin_execute(admin_dsn, statement)


def database_exists(admin_dsn: str, name: str) -> bool:
    return bool(_admin_execute(admin_dsn, sql.SQL("SELECT 1 FROM pg_database WHERE datname = %s"), [name]))


def create_database(admin_dsn: str, name: str, *, owner: str | None = None, exist_ok: bool = False) -> None:
    if exist_ok and database_exists(admin_dsn, name):
        return
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if owner:
        statement = sql.SQL("{} OWNER {}").format(statement, sql.Identifier(owner))
    _admin_execute(admin_dsn, statement)


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop ``name`` if it exists, disconnecting its remaining sessions (PostgreSQL >= 13)."""
    _admin_execute(admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def list_databases(admin_dsn: str, prefix: str = "") -> list[str]:
    rows = _admin_execute(
        admin_dsn, sql.SQL("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1"), [prefix + "%"]
    )
    return [row[0] for row in rows]


# -- Redis keys -----------------------------------------------------------------------------------
def delete_feast_keys(host: str, port: int, project: str) -> int:
    """Delete a Feast project's online rows; returns how many keys went.

    Feast's Redis store keys every entity as ``<serialized entity key><project>`` and deletes a
    project's rows with this same pattern (``RedisOnlineStore.delete_entity_values``).
    """
    client = redis.Redis(host=host, port=port)
    try:
        deleted = 0
        with client.pipeline(transaction=False) as pipe:
            for key in client.scan_iter(match=b"*" + project.encode(), count=1000):
                pipe.delete(key)
                deleted += 1
            pipe.execute()
        return deleted
    finally:
        client.close()


# -- RabbitMQ virtual hosts -----------------------------------------------------------------------
def create_vhost(name: str, *, user: str = "guest", install: bool = True) -> None:
    """A virtual host of its own isolates a test session's exchanges and queues completely."""
    ctl = require_binary("rabbitmqctl", "rabbitmq-server", install=install)
    _run([ctl, "add_vhost", name], f"creating RabbitMQ vhost {name}", 60)
    _run([ctl, "set_permissions", "-p", name, user, ".*", ".*", ".*"], f"granting {user} on {name}", 60)


def delete_vhost(name: str) -> None:
    ctl = require_binary("rabbitmqctl", "rabbitmq-server", install=False)
    _run([ctl, "delete_vhost", name], f"deleting RabbitMQ vhost {name}", 60)


def list_vhosts() -> list[str]:
    ctl = require_binary("rabbitmqctl", "rabbitmq-server", install=False)
    result = subprocess.run(
        [ctl, "list_vhosts", "--quiet", "--no-table-headers"], capture_output=True, text=True, timeout=60, check=True
    )
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def ensure_postgres_for(settings: Settings) -> str:
    """``ensure_postgres`` with the stack settings' address and admin account; returns the admin DSN."""
    return ensure_postgres(
        settings.postgres_host,
        settings.postgres_port,
        admin_user=settings.postgres_admin_user,
        admin_database=settings.postgres_admin_database,
        install=settings.install_missing,
    )
