"""A whole platform on free ports for one benchmark run, torn down at the end (even on failure).

The same steps as the integration tests (``tests/conftest.py``, ``tests/platform_fixtures.py``,
``tests/serving_fixtures.py``), without pytest: the machine's PostgreSQL, Redis and RabbitMQ (a fresh
database and vhost of our own), a private SeaweedFS, MLflow and Triton, then synthetic data -> feature
pipeline -> trainer (MLflow champion) -> model sync (Triton Python backend) -> BFF. Nothing uses the
fixed ports of the local stack (8333, 5000, 8000-8002, 8080), so a running demo is left alone.

Usage::

    with BenchPlatform.up(work_dir) as platform:
        bff = platform.start_bff("bff", inference_logging=False)
        ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
for _path in ("services", "data", "feature_repo"):
    if str(ROOT / _path) not in sys.path:
        sys.path.insert(0, str(ROOT / _path))

from devstack import system_services as sys_svc  # noqa: E402
from devstack.components import (  # noqa: E402
    MlflowServer,
    S3Server,
    SeaweedPorts,
    TritonServer,
    app_daemon,
    start_mlflow,
    start_seaweedfs,
    start_triton,
)
from devstack.processes import Daemon, free_port  # noqa: E402
from devstack.settings import Settings as StackSettings  # noqa: E402
from devstack.triton_home import TritonHome, ensure_triton_home  # noqa: E402

log = logging.getLogger("benchmarks")
# A line per health poll would bury the benchmark's own log.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Enough rows for a stable model and a realistic online store; quick to fit.
APPLICANTS = 4000
QUICK_MODEL = {"max_iter": 60}
PERF_ANALYZER = ROOT / ".tools" / "model-analyzer" / "bin" / "perf_analyzer"
TAG = f"bench_{os.getpid()}_{secrets.token_hex(3)}"


def settings_from(settings_class, env: dict[str, str]):
    fields = settings_class.model_fields
    return settings_class(**{k.lower(): v for k, v in env.items() if k.lower() in fields})


def machine_summary() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": sys.version.split()[0], "loadavg": load_average()}


def run_facts(command: str, took_s: float, load_at_start: str) -> list[str]:
    """A report's Date, Command and Machine lines, for a run that started a platform of its own."""
    machine = machine_summary()
    return [
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `{command}` ({took_s:.0f} s, platform start included)",
        f"- Machine: {machine['nproc']} CPUs (shared), {machine['cpu']}, Python {machine['python']}; load average "
        f"before: {load_at_start}, after: {machine['loadavg']}",
    ]


def load_average() -> str:
    """1/5/15-minute load averages: other work on the shared machine shows up here."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def perf_analyzer_binary() -> Path:
    """perf_analyzer of the tritonclient 2.51 wheel (newer ones need glibc 2.38), in Model Analyzer's
    environment (it pins protobuf<5, so never in .venv)."""
    if not PERF_ANALYZER.exists():
        raise FileNotFoundError(f"{PERF_ANALYZER} is missing: `make bench-tools` installs it")
    return PERF_ANALYZER


@dataclass
class Bff:
    name: str
    url: str
    metrics_url: str
    daemon: Daemon


@dataclass
class BenchPlatform:
    work: Path
    env: dict[str, str]
    triton: TritonServer
    triton_home: TritonHome
    model_version: int = 0
    # SeaweedFS, the platform's S3 server.
    s3_pid: int | None = None
    _cleanups: list = field(default_factory=list)

    # -- bring-up ---------------------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def up(cls, work: Path) -> Iterator[BenchPlatform]:
        """Start everything, train a champion and have Triton serve it; stop and delete it all at the end."""
        work.mkdir(parents=True, exist_ok=True)
        logs = work / "logs"
        cleanups: list = []
        try:
            platform = cls._start(work, logs, cleanups)
            platform._cleanups = cleanups
            yield platform
        finally:
            for what, cleanup in reversed(cleanups):
                try:
                    cleanup()
                except Exception as err:  # keep tearing down the rest
                    log.warning("cleanup of %s failed: %s", what, err)

    @classmethod
    def _start(cls, work: Path, logs: Path, cleanups: list) -> BenchPlatform:
        s = StackSettings()
        started = time.monotonic()
        admin_dsn = sys_svc.ensure_postgres_for(s)
        redis_host, redis_port = s.redis_host_port
        sys_svc.ensure_redis(redis_host, redis_port, install=s.install_missing)
        rabbit_host, rabbit_port = s.rabbitmq_host_port
        sys_svc.ensure_rabbitmq(rabbit_host, rabbit_port, install=s.install_missing)
        sys_svc.create_vhost(TAG)
        cleanups.append(("rabbitmq vhost", lambda: sys_svc.delete_vhost(TAG)))

        s3 = start_seaweedfs(
            work / "seaweedfs",
            SeaweedPorts.free(),
            access_key=f"bench-{secrets.token_hex(4)}",
            secret_key=secrets.token_hex(16),
            log_path=logs / "seaweedfs.log",
            die_with_parent=True,
        )
        s3.daemon.stop_timeout_s = 5.0
        cleanups.append(("seaweedfs", s3.stop))

        sys_svc.create_database(admin_dsn, TAG)
        cleanups.append(("postgres database", lambda: sys_svc.drop_database(admin_dsn, TAG)))
        mlflow: MlflowServer = start_mlflow(
            sys_svc.postgres_dsn(
                TAG,
                user=s.postgres_admin_user,
                host=s.postgres_host,
                port=s.postgres_port,
                driver="postgresql+psycopg2",
            ),
            f"s3://{s3.new_bucket('mlflow')}/artifacts",
            free_port(),
            s3.env(),
            logs / "mlflow.log",
            cwd=work,
            die_with_parent=True,
            timeout_s=180.0,
        )
        cleanups.append(("mlflow", mlflow.stop))

        home_dir = work / "triton-home"
        triton = start_triton(
            work / "model_repository",
            free_port(),
            free_port(),
            free_port(),
            logs / "triton.log",
            home_dir=home_dir,
            triton_venv=s.triton_venv,
            die_with_parent=True,
        )
        cleanups.append(("triton", triton.stop))
        home = ensure_triton_home(home_dir, s.triton_venv)
        log.info("servers up in %.0f s", time.monotonic() - started)

        env = cls._platform_env(work, s3, mlflow, triton, f"{redis_host}:{redis_port}", rabbit_host, rabbit_port)
        platform = cls(work=work, env=env, triton=triton, triton_home=home, s3_pid=s3.daemon.pid())
        platform._cleanups = cleanups
        platform._train(s3)
        platform._start_model_sync(logs)
        return platform

    @staticmethod
    def _platform_env(work, s3: S3Server, mlflow, triton, redis_host_port, rabbit_host, rabbit_port) -> dict[str, str]:
        return {
            **{k: v for k, v in s3.env().items() if k != "MLFLOW_S3_ENDPOINT_URL"},
            "RAW_BUCKET": s3.new_bucket("raw"),
            "OFFLINE_BUCKET": s3.new_bucket("offline"),
            "LOGS_BUCKET": s3.new_bucket("logs"),
            "MLFLOW_TRACKING_URI": mlflow.tracking_uri,
            "MLFLOW_EXPERIMENT_NAME": f"bench-{secrets.token_hex(4)}",
            "REGISTERED_MODEL_NAME": f"bench-{secrets.token_hex(4)}",
            "FEAST_PROJECT": f"bench_{secrets.token_hex(4)}",
            "FEAST_REGISTRY_PATH": str(work / "feast" / "registry.db"),
            "FEAST_SQLITE_PATH": str(work / "feast" / "online.db"),
            "FEAST_REDIS_CONNECTION": f"{redis_host_port},db=0",
            "FEAST_S3_ENDPOINT_URL": s3.endpoint_url,
            "TRITON_GRPC_URL": triton.grpc_url,
            "TRITON_HTTP_URL": triton.http_url,
            "TRITON_MODEL_NAME": "credit_default",
            "TRITON_RUNTIME": "python",
            "MODEL_REPOSITORY": str(triton.model_repository),
            "SYNC_INTERVAL_S": "1",
            "RABBITMQ_URL": f"amqp://guest:guest@{rabbit_host}:{rabbit_port}/{TAG}",
            "INFERENCE_LOG_EXCHANGE": f"inference-logs-{secrets.token_hex(4)}",
            "INFERENCE_LOG_QUEUE": f"inference-logs-{secrets.token_hex(4)}",
            "MODEL_SYNC_METRICS_PORT": str(free_port()),
            "LOG_WORKER_METRICS_PORT": str(free_port()),
            "LOG_LEVEL": "WARNING",
        }

    def _train(self, s3: S3Server) -> None:
        from feature_store import pipeline
        from feature_store.settings import Settings as FeatureStoreSettings
        from synthetic_home_credit import generate
        from trainer.settings import Settings as TrainerSettings
        from trainer.train import TrainingRequest, train

        started = time.monotonic()
        # Feast reads the offline store's S3 credentials only from the process environment.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            os.environ[key] = s3.env()[key]
        (self.work / "feast").mkdir(parents=True, exist_ok=True)
        data_dir = self.work / "data"
        generate(APPLICANTS, seed=11).write(data_dir)
        fs_settings = settings_from(FeatureStoreSettings, self.env)
        pipeline.upload_raw(fs_settings, data_dir)
        pipeline.run(fs_settings)
        result = train(settings_from(TrainerSettings, self.env), TrainingRequest(hyperparameters=QUICK_MODEL))
        if not result.decision.promoted:
            raise RuntimeError(f"the trained model was not promoted: {result.decision}")
        log.info("data, features and champion ready in %.0f s", time.monotonic() - started)

    def _start_model_sync(self, logs: Path) -> None:
        sync = app_daemon("model_sync", "model_sync", logs / "model_sync.log", env=self.env, die_with_parent=True)
        sync.start()
        self._cleanups.append(("model_sync", sync.stop))
        model = self.env["TRITON_MODEL_NAME"]
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=self.triton.base_url, timeout=5) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"/v2/models/{model}/ready").status_code == 200:
                        self.model_version = int(client.get(f"/v2/models/{model}").json()["versions"][0])
                        return
                time.sleep(0.5)
        raise TimeoutError(f"Triton did not load {model} within 180 s; see {logs / 'model_sync.log'}")

    # -- what the benchmarks use ------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.env["TRITON_MODEL_NAME"]

    @property
    def onnx_path(self) -> Path:
        return self.triton.model_repository / self.model_name / str(self.model_version) / "model.onnx"

    def start_bff(self, name: str, *, inference_logging: bool, **extra: str) -> Bff:
        port, metrics_port = free_port(), free_port()
        env = {
            **self.env,
            "BFF_HOST": "127.0.0.1",
            "BFF_PORT": str(port),
            "BFF_METRICS_PORT": str(metrics_port),
            "INFERENCE_LOGGING_ENABLED": str(inference_logging).lower(),
            "LOG_SPOOL_DIR": str(self.work / f"{name}-spool"),
            # One process unless a benchmark compares worker counts: the same on every machine.
            "BFF_WORKERS": "1",
            **extra,
        }
        url = f"http://127.0.0.1:{port}"
        daemon = app_daemon(
            name, "bff", self.work / "logs" / f"{name}.log", env=env, health=f"{url}/health/ready", die_with_parent=True
        )
        daemon.start(timeout_s=120)
        self._cleanups.append((name, daemon.stop))
        return Bff(name, url, f"http://127.0.0.1:{metrics_port}/metrics", daemon)

    def start_log_worker(self) -> Daemon:
        daemon = app_daemon(
            "log_worker", "log_worker", self.work / "logs" / "log_worker.log", env=self.env, die_with_parent=True
        )
        daemon.start()
        self._cleanups.append(("log_worker", daemon.stop))
        return daemon

    @staticmethod
    def metric(url: str, name: str) -> float:
        """Sum of a Prometheus metric's samples (all labels) at ``url``; ``name{label="x"}`` for one series."""
        total = 0.0
        text = httpx.get(url, timeout=5).text
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                key = line.rsplit(" ", 1)[0]
                if key == name or key.startswith(name + "{") or "{" in name:
                    total += float(line.rsplit(" ", 1)[1])
        return total


def remove_work_dir(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def work_dir(prefix: str, *, keep: bool) -> Iterator[Path]:
    """A fresh folder for one run's platform under ``benchmarks/results/tmp/``, deleted at the end
    (even on failure) unless ``keep`` (``--keep-work``)."""
    root = ROOT / "benchmarks" / "results" / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield work
    finally:
        if not keep:
            remove_work_dir(work)


def command_line(script: str) -> str:
    """How a report quotes the command that produced it: ``script`` with this run's arguments."""
    return "python " + shlex.join([script, *sys.argv[1:]])


def write_report(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


def feature_bodies(count: int, seed: int = 7) -> list[dict[str, float]]:
    """``count`` varied /predict bodies with every feature given (no online-store read)."""
    import random

    from bff.schemas import FEATURES_EXAMPLE

    rng = random.Random(seed)
    return [{k: float(round(v * rng.uniform(0.5, 1.5))) for k, v in FEATURES_EXAMPLE.items()} for _ in range(count)]


def rabbitmq_pid() -> int:
    """The local RabbitMQ's Erlang VM (the machine's broker, which the benchmarks use), so that its CPU can
    be counted; raises if there is none."""
    import psutil

    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "beam.smp" and "rabbit" in " ".join(process.info["cmdline"] or []):
            return process.pid
    raise RuntimeError("no local RabbitMQ process (beam.smp running rabbit) to count the CPU of")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process and all its live descendants (a BFF's uvicorn workers,
    Triton's Python-backend stubs), 0 when gone."""
    import psutil

    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
