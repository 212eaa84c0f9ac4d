"""Keep Triton serving the MLflow ``champion``: download, check, install, load, confirm.

Triton runs in explicit model-control mode and this loop is the only thing that loads models.
A load call over gRPC returns once the new version is ready; until then (and forever, if it
fails) the previous version keeps answering, so a switch costs no failed request.
"""

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import tritonclient.grpc as grpcclient
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prometheus_client import Counter, Gauge

from mlops_common.metrics import service_registry
from mlops_common.triton_config import ONNX_FILENAME, TritonModelSpec
from model_sync.repository import ModelRepository
from model_sync.settings import Settings

log = logging.getLogger(__name__)

REGISTRY = service_registry()
LOAD_OUTCOMES = ("success", "failure")
LOADS = Counter("model_sync_loads", "Champion load attempts into Triton", ["outcome"], registry=REGISTRY)
for _outcome in LOAD_OUTCOMES:
    LOADS.labels(_outcome)  # at 0 from start-up: increase() sees the first failure
SERVED_VERSION = Gauge("model_sync_served_version", "MLflow model version Triton serves (0 = none)", registry=REGISTRY)
CHECK_ERRORS = Counter(
    "model_sync_check_errors", "Sync checks that failed before a load (MLflow/Triton unreachable)", registry=REGISTRY
)
LAST_SUCCESS = Gauge(
    "model_sync_last_success_timestamp_seconds", "Unix time of the last successful sync check", registry=REGISTRY
)


class SyncError(RuntimeError):
    """A champion could not be brought into service; the previous version keeps serving."""


@dataclass(frozen=True)
class Champion:
    version: int
    run_id: str


class ModelSync:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.repository = ModelRepository(
            settings.model_repository,
            TritonModelSpec(name=settings.triton_model_name, instance_kind=settings.triton_instance_kind),
            settings.triton_runtime,
        )
        self.mlflow = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        self._triton: grpcclient.InferenceServerClient | None = None
        self.served: int | None = None

    @property
    def triton(self) -> grpcclient.InferenceServerClient:
        if self._triton is None:
            self._triton = grpcclient.InferenceServerClient(self.settings.triton_grpc_url)
        return self._triton

    def champion(self) -> Champion | None:
        try:
            version = self.mlflow.get_model_version_by_alias(
                self.settings.registered_model_name, self.settings.champion_alias
            )
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return Champion(int(version.version), version.run_id)

    def _download(self, version: int) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{self.settings.registered_model_name}/{version}",
                dst_path=tmp,
                tracking_uri=self.settings.mlflow_tracking_uri,
            )
            return (Path(local) / ONNX_FILENAME).read_bytes()

    def served_version(self) -> int | None:
        """The version Triton reports ready (after a restart of this process, Triton still knows)."""
        ready = [v for v in self.repository.versions() if self._ready(v)]
        return max(ready) if ready else None

    def place_champion(self) -> int | None:
        """Put the champion into the repository without Triton (init container: Triton starts after)."""
        champion = self.champion()
        if champion is None:
            return None
        self.repository.install(champion.version, self._download(champion.version))
        self.repository.select(champion.version)
        self.repository.remove_versions_except(champion.version)
        log.info("placed champion version %d in %s", champion.version, self.repository.model_dir)
        return champion.version

    def sync_once(self) -> bool:
        """Bring Triton to the current champion. Returns True when a new version went into service."""
        champion = self.champion()
        if self.served is None:
            self.served = self.served_version()
            SERVED_VERSION.set(self.served or 0)
        if champion is None:
            LAST_SUCCESS.set_to_current_time()
            return False
        if champion.version == self.served:
            if not self._ready(champion.version):
                # Triton restarted (explicit mode starts empty): load the version already on disk.
                log.warning("Triton lost version %d; loading it again", champion.version)
                self._load(champion.version)
                LOADS.labels("success").inc()
            LAST_SUCCESS.set_to_current_time()
            return False
        log.info("champion is version %d, Triton serves %s: switching", champion.version, self.served)
        try:
            self.repository.install(champion.version, self._download(champion.version))
            self.repository.select(champion.version)
            self._load(champion.version)
        except Exception as err:
            LOADS.labels("failure").inc()
            # Remove the failed version so the next attempt starts clean (Triton keeps a failed load's state).
            self.repository.remove_version(champion.version)
            if self.served is not None:
                self.repository.select(self.served)  # a Triton restart must come back on the working version
            raise SyncError(f"version {champion.version} not served, still serving {self.served}: {err}") from err
        self.repository.remove_versions_except(champion.version)
        self.served = champion.version
        LOADS.labels("success").inc()
        SERVED_VERSION.set(champion.version)
        LAST_SUCCESS.set_to_current_time()
        log.info("Triton now serves version %d", champion.version)
        return True

    def _ready(self, version: int) -> bool:
        return self.triton.is_model_ready(self.settings.triton_model_name, str(version))

    def _load(self, version: int) -> None:
        self.triton.load_model(self.settings.triton_model_name, client_timeout=self.settings.triton_load_timeout_s)
        if not self._ready(version):
            raise SyncError(f"Triton accepted the load but version {version} is not ready")

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.sync_once()
            except SyncError:
                log.exception("load failed; retrying in %.0f s", self.settings.sync_interval_s)
            except Exception:
                # MLflow or Triton being down must never stop the loop; the served model stays.
                CHECK_ERRORS.inc()
                log.exception("sync check failed; retrying in %.0f s", self.settings.sync_interval_s)
            stop.wait(max(0.0, self.settings.sync_interval_s - (time.monotonic() - started)))
