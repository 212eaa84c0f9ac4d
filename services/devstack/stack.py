"""The fixed-port local stack behind ``python -m devstack up|down|reset|status`` and ``make demo``.

System services (PostgreSQL, Redis, RabbitMQ) are started if down and never stopped. Our own daemons
(SeaweedFS, MLflow, Triton, and application processes started through ``start_app``) keep their pid,
record and log under ``.stack/``; ``down`` stops every daemon recorded there, newest first. What the
stack keeps in the system services is named after the stack (``devstack.instance``); ``reset`` deletes
it together with ``.stack/``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from devstack import system_services as sys_svc
from devstack.components import (
    SeaweedPorts,
    app_daemon,
    create_buckets,
    mlflow_daemon,
    seaweedfs_daemon,
    triton_daemon,
)
from devstack.instance import StackInstance
from devstack.ports import PortClaim, port_conflicts
from devstack.processes import Daemon, http_ok, recorded_daemons
from devstack.prometheus import prometheus_daemon, scrape_targets, write_config
from devstack.settings import Settings
from devstack.triton_home import TritonHome, ensure_triton_home, inspect_venv

log = logging.getLogger(__name__)

CORE_DAEMONS = ("seaweedfs", "mlflow", "triton", "prometheus")
SYSTEM_SERVICES = ("postgres", "redis", "rabbitmq")
COMPONENTS = SYSTEM_SERVICES + CORE_DAEMONS


class PortsTakenError(RuntimeError):
    """Another process holds ports of this stack; nothing was started."""


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    up: bool
    address: str
    pid: int | None = None
    log_path: Path | None = None
    detail: str = ""

    def line(self) -> str:
        state = "up" if self.up else "down"
        pid = str(self.pid) if self.pid else "-"
        where = str(self.log_path) if self.log_path else "(system service)"
        detail = f"  {self.detail}" if self.detail else ""
        return f"{self.name:<12} {state:<5} {self.address:<64} pid={pid:<8} log={where}{detail}"


class LocalStack:
    def __init__(self, settings: Settings | None = None) -> None:
        # As configured; ``settings`` adds the names recorded for this stack instance.
        self.base_settings = settings or Settings()
        self._instance: StackInstance | None = None

    @property
    def instance(self) -> StackInstance:
        """This stack's id and state names, recorded on first use in ``<stack_dir>/stack.json``."""
        if self._instance is None:
            self._instance = StackInstance.load_or_create(self.base_settings)
        return self._instance

    @property
    def settings(self) -> Settings:
        return self.instance.bind(self.base_settings)

    # -- paths and specs --------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"

    def seaweedfs(self) -> Daemon:
        s = self.settings
        return seaweedfs_daemon(
            s.seaweedfs_dir,
            SeaweedPorts.block(s.s3_host_port[1], s.seaweedfs_internal_base_port),
            s.aws_access_key_id or "",
            s.secret_key,
            self.log_path("seaweedfs"),
            state_dir=s.run_dir,
        )

    def mlflow(self) -> Daemon:
        s = self.settings
        s3_env = {
            "MLFLOW_S3_ENDPOINT_URL": s.s3_endpoint_url or "",
            "AWS_ACCESS_KEY_ID": s.aws_access_key_id or "",
            "AWS_SECRET_ACCESS_KEY": s.secret_key,
            "AWS_DEFAULT_REGION": s.aws_default_region,
        }
        return mlflow_daemon(
            s.mlflow_backend_store_uri,
            s.mlflow_artifacts_destination,
            s.mlflow_host_port[1],
            s3_env,
            self.log_path("mlflow"),
            workers=s.mlflow_workers,
            allowed_hosts=s.mlflow_allowed_hosts,
            state_dir=s.run_dir,
            cwd=s.stack_dir / "mlflow",
        )

    @property
    def prometheus_config(self) -> Path:
        return self.settings.stack_dir / "prometheus" / "prometheus.yml"

    def prometheus(self) -> Daemon:
        s = self.settings
        return prometheus_daemon(
            self.prometheus_config,
            s.stack_dir / "prometheus" / "data",
            s.prometheus_host_port[1],
            self.log_path("prometheus"),
            state_dir=s.run_dir,
        )

    def triton_home(self, *, setup: bool = True) -> TritonHome:
        """The Triton home, laid out first unless ``setup`` is False (status must not write)."""
        if setup:
            return ensure_triton_home(self.settings.triton_home, self.settings.triton_venv)
        return TritonHome(self.settings.triton_home, inspect_venv(self.settings.triton_venv.resolve()))

    def triton(self, home: TritonHome | None = None) -> Daemon:
        s = self.settings
        return triton_daemon(
            s.model_repository,
            s.triton_http_host_port[1],
            s.triton_grpc_host_port[1],
            s.triton_metrics_port,
            self.log_path("triton"),
            home or self.triton_home(),
            state_dir=s.run_dir,
        )

    def port_claims(self) -> list[PortClaim]:
        """Every port this stack's daemons and applications listen on, and whether our own process
        for it is running now."""
        s = self.base_settings
        running = {d.name for d in recorded_daemons(s.run_dir) if d.is_running()} if s.run_dir.is_dir() else set()
        seaweed = SeaweedPorts.block(s.s3_host_port[1], s.seaweedfs_internal_base_port)
        claims = [("seaweedfs", seaweed.s3, "S3_ENDPOINT_URL")]
        claims += [
            ("seaweedfs", getattr(seaweed, f.name), "SEAWEEDFS_INTERNAL_BASE_PORT")
            for f in fields(seaweed)
            if f.name != "s3"
        ]
        claims += [
            ("mlflow", s.mlflow_host_port[1], "MLFLOW_TRACKING_URI"),
            ("triton", s.triton_http_host_port[1], "TRITON_HTTP_URL"),
            ("triton", s.triton_grpc_host_port[1], "TRITON_GRPC_URL"),
            ("triton", s.triton_metrics_port, "TRITON_METRICS_PORT"),
            ("prometheus", s.prometheus_host_port[1], "PROMETHEUS_URL"),
            ("bff", s.bff_port, "BFF_PORT"),
            ("bff", s.bff_metrics_port, "BFF_METRICS_PORT"),
            ("model_sync", s.model_sync_metrics_port, "MODEL_SYNC_METRICS_PORT"),
            ("log_worker", s.log_worker_metrics_port, "LOG_WORKER_METRICS_PORT"),
            ("monitor", s.monitor_metrics_port, "MONITOR_METRICS_PORT"),
            ("job_worker", s.job_worker_metrics_port, "JOB_WORKER_METRICS_PORT"),
        ]
        return [PortClaim(name, port, setting, ours=name in running) for name, port, setting in claims]

    # -- up ---------------------------------------------------------------------------------------
    def up(self, only: Sequence[str] | None = None) -> None:
        """Bring the components up in dependency order (idempotent); ``only`` limits which."""
        wanted = set(only or COMPONENTS)
        unknown = wanted - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components: {sorted(unknown)}; choose from {COMPONENTS}")
        # Before anything starts: a port held by another process (another clone's stack) stops us
        # here, with its owner named, rather than halfway through.
        conflicts = port_conflicts(self.port_claims())
        if conflicts:
            raise PortsTakenError("nothing was started:\n" + "\n".join(f"- {line}" for line in conflicts))
        s = self.settings
        steps: list[tuple[str, Callable[[], object]]] = [
            ("postgres", self._up_postgres),
            ("redis", lambda: sys_svc.ensure_redis(*s.redis_host_port, install=s.install_missing)),
            ("rabbitmq", self._up_rabbitmq),
            ("seaweedfs", self._up_seaweedfs),
            ("mlflow", self._up_mlflow),
            ("triton", lambda: self.triton().ensure_running(s.startup_timeout_s)),
            ("prometheus", self._up_prometheus),
        ]
        # MLflow needs its database and bucket even when only it was asked for.
        if "mlflow" in wanted:
            wanted |= {"postgres", "seaweedfs"}
        for name, step in steps:
            if name in wanted:
                started = time.monotonic()
                step()
                log.info("%-9s up (%.1fs)", name, time.monotonic() - started)

    def _up_postgres(self) -> None:
        s = self.settings
        admin_dsn = sys_svc.ensure_postgres_for(s)
        password = s.mlflow_db_password.get_secret_value() if s.mlflow_db_password else None
        sys_svc.ensure_role(admin_dsn, s.mlflow_db_user, password)
        sys_svc.create_database(admin_dsn, s.mlflow_db_name, owner=s.mlflow_db_user, exist_ok=True)
        sys_svc.create_database(admin_dsn, s.jobs_db_name, owner=s.mlflow_db_user, exist_ok=True)

    def _up_rabbitmq(self) -> None:
        s = self.settings
        sys_svc.ensure_rabbitmq(*s.rabbitmq_host_port, install=s.install_missing)
        if s.rabbitmq_vhost not in sys_svc.list_vhosts():
            sys_svc.create_vhost(s.rabbitmq_vhost, user=s.rabbitmq_user, install=s.install_missing)
        sys_svc.ensure_rabbitmq_prometheus(s.rabbitmq_host_port[0], s.rabbitmq_prometheus_port)

    def _up_prometheus(self) -> None:
        s = self.settings
        daemon = self.prometheus()
        changed = write_config(self.prometheus_config, s.metrics_addresses, interval_s=s.prometheus_scrape_interval_s)
        if changed and daemon.is_running():
            daemon.stop()  # it reads its configuration at start
        daemon.ensure_running(s.startup_timeout_s)

    def _up_seaweedfs(self) -> None:
        self.seaweedfs().ensure_running(self.settings.startup_timeout_s)
        create_buckets(self.settings, self.settings.buckets)

    def _up_mlflow(self) -> None:
        self.mlflow().ensure_running(self.settings.startup_timeout_s)

    def start_app(
        self,
        name: str,
        command: str | Sequence[str],
        *,
        health: str | None = None,
        env: Mapping[str, str] | None = None,
        address: str = "",
    ) -> Daemon:
        """Run a platform process (``"bff"`` -> ``python -m bff``) as a managed daemon with the
        stack's ``platform_env()`` plus ``env``; ``down`` stops it, ``status`` reports it."""
        daemon = app_daemon(
            name,
            command,
            self.log_path(name),
            env={**self.settings.platform_env(), **(env or {})},
            health=health,
            state_dir=self.settings.run_dir,
            address=address,
        )
        return daemon.ensure_running(self.settings.startup_timeout_s)

    def stop_app(self, name: str) -> bool:
        """Stop one recorded daemon by name; True if it was running."""
        record = self.settings.run_dir / f"{name}.json"
        return record.exists() and Daemon.from_record(record).stop()

    # -- down -------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every daemon devstack recorded (apps first, then Triton, MLflow, SeaweedFS)."""
        run_dir = self.base_settings.run_dir
        daemons = recorded_daemons(run_dir) if run_dir.is_dir() else []
        order = {name: i for i, name in enumerate(CORE_DAEMONS)}
        # Apps depend on the core daemons: stop them first; core daemons in reverse start order.
        daemons.sort(key=lambda d: order.get(d.name, len(order)), reverse=True)
        stopped = []
        for daemon in daemons:
            if daemon.stop():
                stopped.append(daemon.name)
                log.info("%-9s stopped", daemon.name)
        # Pid files without a record (e.g. written by hand) would otherwise linger.
        for pid_file in run_dir.glob("*.pid") if run_dir.is_dir() else []:
            if not pid_file.with_suffix(".json").exists():
                pid_file.unlink()
        return stopped

    def reset(self) -> list[str]:
        """``down``, then delete everything the stack keeps: its MLflow database, RabbitMQ vhost and
        Feast keys in Redis (the names recorded in stack.json), and the stack directory. The system
        services stay up. Returns what was deleted."""
        self.down()
        s = self.base_settings
        instance = StackInstance.load(s.stack_dir)
        deleted = []
        if instance is not None:
            admin_dsn = sys_svc.ensure_postgres_for(s)
            for database in (instance.mlflow_db_name, instance.jobs_db_name):
                if sys_svc.database_exists(admin_dsn, database):
                    sys_svc.drop_database(admin_dsn, database)
                    deleted.append(f"PostgreSQL database {database}")
            sys_svc.ensure_rabbitmq(*s.rabbitmq_host_port, install=s.install_missing)
            if instance.rabbitmq_vhost in sys_svc.list_vhosts():
                sys_svc.delete_vhost(instance.rabbitmq_vhost)
                deleted.append(f"RabbitMQ vhost {instance.rabbitmq_vhost}")
            sys_svc.ensure_redis(*s.redis_host_port, install=s.install_missing)
            keys = sys_svc.delete_feast_keys(*s.redis_host_port, instance.feast_project)
            deleted.append(f"{keys} Redis keys of Feast project {instance.feast_project}")
        if s.stack_dir.exists():
            shutil.rmtree(s.stack_dir)
            deleted.append(str(s.stack_dir))
        self._instance = None
        return deleted

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> list[ComponentStatus]:
        s = self.settings
        pg_dsn = sys_svc.postgres_dsn(
            s.postgres_admin_database, user=s.postgres_admin_user, host=s.postgres_host, port=s.postgres_port
        )
        redis_addr, rabbit_addr = s.redis_host_port, s.rabbitmq_host_port
        result = [
            ComponentStatus("postgres", sys_svc.postgres_ready(pg_dsn), f"{s.postgres_host}:{s.postgres_port}"),
            ComponentStatus("redis", sys_svc.redis_ready(*redis_addr), "{}:{}".format(*redis_addr)),
            ComponentStatus("rabbitmq", sys_svc.rabbitmq_ready(*rabbit_addr), "{}:{}".format(*rabbit_addr)),
        ]
        try:
            triton = self.triton(self.triton_home(setup=False))
        except Exception as err:  # a missing Triton venv must not hide the other lines
            result.append(ComponentStatus("triton", False, s.triton_http_url, detail=str(err)))
            core = [self.seaweedfs(), self.mlflow(), self.prometheus()]
        else:
            core = [self.seaweedfs(), self.mlflow(), triton, self.prometheus()]
        known = {d.name for d in core}
        apps = [d for d in recorded_daemons(s.run_dir) if d.name not in known] if s.run_dir.is_dir() else []
        for daemon in core + apps:
            result.append(_daemon_status(daemon))
        order = {name: i for i, name in enumerate(COMPONENTS)}
        return sorted(result, key=lambda c: order.get(c.name, len(order)))

    def metrics_endpoints(self) -> list[tuple[str, str, bool]]:
        """(container, metrics URL, answering now) for every target Prometheus scrapes."""
        addresses = self.base_settings.metrics_addresses
        return [
            (t.container, url, http_ok(url))
            for t in scrape_targets()
            for url in [f"http://{addresses[t.container]}{t.path}"]
        ]


def _daemon_status(daemon: Daemon) -> ComponentStatus:
    pid = daemon.pid(cleanup=False)
    if pid is None:
        crashed = daemon.pid_path is not None and daemon.pid_path.exists()
        detail = "stale pid file: it exited, see its log" if crashed else ""
        return ComponentStatus(daemon.name, False, daemon.address, None, daemon.log_path, detail)
    healthy = daemon.is_healthy()
    detail = "" if healthy else f"running but health check failed ({daemon.health_url})"
    return ComponentStatus(daemon.name, healthy, daemon.address, pid, daemon.log_path, detail)
