"""Serving processes for tests: model sync and the BFF as real subprocesses on the session's servers."""

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devstack.components import app_daemon
from devstack.processes import Daemon, free_port


@dataclass
class Serving:
    env: dict[str, str]
    bff_url: str
    bff: Daemon
    model_sync: Daemon

    @property
    def metrics_url(self) -> str:
        """The BFF's /metrics, on its own port (BFF_METRICS_PORT)."""
        return bff_metrics_url(self.env)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.bff_url, timeout=10.0, **kwargs)


def register_onnx(env: dict[str, str], model, *, profile_of: str | None = None) -> str:
    """A new version of ``REGISTERED_MODEL_NAME`` holding the ONNX ``model`` (logged as the trainer logs
    one, without training), in ``MLFLOW_EXPERIMENT_NAME``, with the reference profile of the run
    ``profile_of`` (for the monitor); returns the version."""
    import mlflow

    from mlops_common.reference_profile import PROFILE_ARTIFACT

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(env["MLFLOW_EXPERIMENT_NAME"])
    with mlflow.start_run():
        info = mlflow.onnx.log_model(model, name="model", registered_model_name=env["REGISTERED_MODEL_NAME"])
        if profile_of is not None:
            mlflow.log_dict(mlflow.artifacts.load_dict(f"runs:/{profile_of}/{PROFILE_ARTIFACT}"), PROFILE_ARTIFACT)
    return str(info.registered_model_version)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached within {timeout_s:.0f} s")


# Short, so a test of Triton trouble sees the 503 quickly.
TRITON_TIMEOUT_S = 2.0


def bff_metrics_url(env: dict[str, str]) -> str:
    return f"http://{env['BFF_HOST']}:{env['BFF_METRICS_PORT']}/metrics"


def bff_metric(metrics_url: str, sample: str) -> float:
    """One sample of the BFF's metrics (0 when absent)."""
    text = httpx.get(metrics_url, timeout=5.0).text
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, flags=re.MULTILINE)
    return float(match[1]) if match else 0.0


def faults_env(trained_platform, s3_server, unique_name, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The trained platform's environment with a test's own log topology, bucket, spool and ports, for
    tests that break or watch their own serving processes."""
    return {
        **trained_platform.env,
        "INFERENCE_LOG_EXCHANGE": unique_name("inference-logs"),
        "INFERENCE_LOG_QUEUE": unique_name("inference-logs"),
        "LOGS_BUCKET": s3_server.new_bucket("logs"),
        "LOG_SPOOL_DIR": str(tmp_path / "log-spool"),
        "BFF_PORT": str(free_port()),
        "BFF_METRICS_PORT": str(free_port()),
        "MODEL_SYNC_METRICS_PORT": str(free_port()),
        "LOG_WORKER_METRICS_PORT": str(free_port()),
        "TRITON_RUNTIME": "python",
        "SYNC_INTERVAL_S": "1",
        "TRITON_TIMEOUT_S": str(TRITON_TIMEOUT_S),
        **overrides,
    }


def start_serving(env: dict[str, str], logs: Path) -> Serving:
    sync = app_daemon("model_sync", "model_sync", logs / "model_sync.log", env=env, die_with_parent=True).start()
    url = f"http://{env['BFF_HOST']}:{env['BFF_PORT']}"
    bff = app_daemon("bff", "bff", logs / "bff.log", env=env, health=f"{url}/health/ready", die_with_parent=True)
    try:
        bff.start(timeout_s=120)
    except Exception:
        sync.stop()
        raise
    return Serving(env, url, bff, sync)


@pytest.fixture(scope="module")
def serving(trained_platform, unique_name, tmp_path_factory) -> Iterator[Serving]:
    """Model sync (Python-backend runtime, 1 s interval) + BFF serving the session's champion; a job queue of
    the module's own (jobs another module queued, and never ran, stay out of its way)."""
    env = {
        **trained_platform.env,
        "TRITON_RUNTIME": "python",
        "SYNC_INTERVAL_S": "1",
        "JOBS_QUEUE": unique_name("jobs"),
    }
    serving = start_serving(env, tmp_path_factory.mktemp("serving-logs"))
    try:
        yield serving
    finally:
        serving.bff.stop()
        serving.model_sync.stop()
