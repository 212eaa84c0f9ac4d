"""Keep Triton serving the MLflow ``champion`` (and the ``challenger`` while a rollout is on):
download, check, install, load, confirm.

Triton runs in explicit model-control mode and this loop is the only thing that loads models. Both
versions are versions of the one Triton model (pinned in its config), and the config's parameters
carry the routing the BFFs follow (``mlops_common.rollout``). A load call over gRPC returns once the
new config is ready; until then (and forever, if it fails) the previous one keeps answering. Versions
the routing no longer names stay loaded for ``ROUTING_GRACE_S``, so a BFF that has not re-read the
routing yet never calls a version that is gone: a switch costs no failed request.
"""

import logging
import tempfile
import threading
import time
from pathlib import Path

import mlflow
import tritonclient.grpc as grpcclient
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prometheus_client import Counter, Gauge

from mlops_common.metrics import service_registry
from mlops_common.rollout import CHALLENGER_ALIAS, RolloutMode, RolloutPolicy, Routing
from mlops_common.triton_config import ONNX_FILENAME, TritonModelSpec
from model_sync.repository import ModelRepository
from model_sync.settings import Settings

log = logging.getLogger(__name__)

REGISTRY = service_registry()
LOAD_OUTCOMES = ("success", "failure")
LOADS = Counter("model_sync_loads", "Load attempts of a new routing into Triton", ["outcome"], registry=REGISTRY)
for _outcome in LOAD_OUTCOMES:
    LOADS.labels(_outcome)  # at 0 from start-up: increase() sees the first failure
SERVED_VERSION = Gauge(
    "model_sync_served_version", "MLflow model version Triton serves as champion (0 = none)", registry=REGISTRY
)
CHALLENGER_VERSION = Gauge(
    "model_sync_challenger_version", "MLflow model version Triton serves as challenger (0 = none)", registry=REGISTRY
)
CHECK_ERRORS = Counter(
    "model_sync_check_errors", "Sync checks that failed before a load (MLflow/Triton unreachable)", registry=REGISTRY
)
LAST_SUCCESS = Gauge(
    "model_sync_last_success_timestamp_seconds", "Unix time of the last successful sync check", registry=REGISTRY
)


class SyncError(RuntimeError):
    """A routing could not be brought into service; the previous one keeps serving."""


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
        # What Triton serves (None until asked), and the versions it keeps loaded for the grace period.
        self.applied: Routing | None = None
        self.loaded: frozenset[int] = frozenset()
        self.retiring: dict[int, float] = {}
        self._asked_triton = False

    @property
    def triton(self) -> grpcclient.InferenceServerClient:
        if self._triton is None:
            self._triton = grpcclient.InferenceServerClient(self.settings.triton_grpc_url)
        return self._triton

    def _alias(self, alias: str) -> int | None:
        try:
            version = self.mlflow.get_model_version_by_alias(self.settings.registered_model_name, alias)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return int(version.version)

    def desired_routing(self) -> Routing | None:
        """The routing the registry asks for: its champion, and its challenger unless the policy is off."""
        champion = self._alias(self.settings.champion_alias)
        if champion is None:
            return None
        tags = self.mlflow.get_registered_model(self.settings.registered_model_name).tags or {}
        policy = RolloutPolicy.from_settings(self.settings).with_tags(tags)
        challenger = self._alias(CHALLENGER_ALIAS) if policy.mode is not RolloutMode.OFF else None
        if challenger == champion:
            challenger = None
        return Routing(str(champion), str(challenger) if challenger is not None else None, policy)

    def _download(self, version: int) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{self.settings.registered_model_name}/{version}",
                dst_path=tmp,
                tracking_uri=self.settings.mlflow_tracking_uri,
            )
            return (Path(local) / ONNX_FILENAME).read_bytes()

    def served_routing(self) -> tuple[Routing | None, frozenset[int]]:
        """What Triton serves now (after a restart of this process, Triton still knows): the routing in
        its loaded config, and the versions it reports ready."""
        ready = frozenset(v for v in self.repository.versions() if self._ready(v))
        if not ready:
            return None, ready
        config = self.triton.get_model_config(self.settings.triton_model_name, as_json=True)["config"]
        # JSON leaves out an empty string_value (no challenger).
        parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        routing = Routing.from_parameters(parameters)
        return routing or Routing(str(max(ready))), ready

    def place_champion(self) -> int | None:
        """Put the champion into the repository without Triton (init container: Triton starts after)."""
        champion = self._alias(self.settings.champion_alias)
        if champion is None:
            return None
        self.repository.install(champion, self._download(champion))
        self.repository.select([champion], Routing(str(champion)).parameters())
        self.repository.remove_versions_except({champion})
        log.info("placed champion version %d in %s", champion, self.repository.model_dir)
        return champion

    def sync_once(self) -> bool:
        """Bring Triton to the registry's routing. Returns True when a new routing went into service."""
        routing = self.desired_routing()
        if not self._asked_triton:
            self.applied, self.loaded = self.served_routing()
            self._asked_triton = True
            self._export()
        if routing is None:
            LAST_SUCCESS.set_to_current_time()
            return False
        now = time.monotonic()
        self.retiring = {v: at for v, at in self.retiring.items() if at > now and v not in _versions(routing)}
        # The versions the served routing names and the new one does not: kept through the switch, then
        # for the grace period from the moment the new routing serves.
        leaving = frozenset()
        if self.applied is not None and routing != self.applied and self.settings.routing_grace_s > 0:
            leaving = (_versions(self.applied) - _versions(routing)) & self.loaded
        versions = _versions(routing) | frozenset(self.retiring) | leaving
        if routing == self.applied and versions == self.loaded:
            if not all(self._ready(v) for v in versions):
                # Triton restarted (explicit mode starts empty): load what is on disk again.
                log.warning("Triton lost versions of %s; loading them again", sorted(versions))
                self._load(versions)
                LOADS.labels("success").inc()
            LAST_SUCCESS.set_to_current_time()
            return False
        try:
            self._apply(routing, versions)
            for version in leaving:
                self.retiring[version] = time.monotonic() + self.settings.routing_grace_s
        except SyncError:
            if routing.challenger is None:
                raise
            # A challenger that cannot be served must not hold up the champion: serve it alone.
            log.exception("challenger version %s cannot be served; serving the champion alone", routing.challenger)
            self._apply(Routing(routing.champion, None, routing.policy), versions - {int(routing.challenger)})
            raise SyncError(f"challenger version {routing.challenger} not served") from None
        return True

    def _apply(self, routing: Routing, versions: frozenset[int]) -> None:
        log.info("routing %s (loaded: %s), Triton serves %s: switching", routing, sorted(versions), self.applied)
        on_disk = set(self.repository.versions())
        try:
            for version in sorted(versions - on_disk):
                self.repository.install(version, self._download(version))
            self.repository.select(versions, routing.parameters())
            self._load(versions)
        except Exception as err:
            LOADS.labels("failure").inc()
            # Remove what was new so the next attempt starts clean (Triton keeps a failed load's state).
            for version in versions - on_disk:
                self.repository.remove_version(version)
            if self.applied is not None:
                # A Triton restart must come back on the working routing.
                self.repository.select(self.loaded, self.applied.parameters())
            raise SyncError(f"{routing} not served, still serving {self.applied}: {err}") from err
        for version in sorted(self.loaded - versions):
            log.info("version %d unloaded", version)
        self.repository.remove_versions_except(versions)
        self.applied, self.loaded = routing, versions
        LOADS.labels("success").inc()
        self._export()
        LAST_SUCCESS.set_to_current_time()
        log.info("Triton now serves %s (loaded: %s)", routing, sorted(versions))

    def _export(self) -> None:
        SERVED_VERSION.set(int(self.applied.champion) if self.applied else 0)
        CHALLENGER_VERSION.set(int(self.applied.challenger) if self.applied and self.applied.challenger else 0)

    def _ready(self, version: int) -> bool:
        return self.triton.is_model_ready(self.settings.triton_model_name, str(version))

    def _load(self, versions: frozenset[int]) -> None:
        self.triton.load_model(self.settings.triton_model_name, client_timeout=self.settings.triton_load_timeout_s)
        not_ready = sorted(v for v in versions if not self._ready(v))
        if not_ready:
            raise SyncError(f"Triton accepted the load but versions {not_ready} are not ready")

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
            stop.wait(max(0.0, self._next_check_in() - (time.monotonic() - started)))

    def _next_check_in(self) -> float:
        """The sync interval, or sooner when a retiring version's grace period ends."""
        if not self.retiring:
            return self.settings.sync_interval_s
        return min(self.settings.sync_interval_s, max(0.0, min(self.retiring.values()) - time.monotonic()) + 0.1)


def _versions(routing: Routing) -> frozenset[int]:
    return frozenset(int(v) for v in (routing.champion, routing.challenger) if v)
