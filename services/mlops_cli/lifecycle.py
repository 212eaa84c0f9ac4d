"""Model lifecycle on the MLflow registry: which version is champion/challenger and why, promote and
roll back with an audit trail, and what Triton actually serves.

Audit trail: every promote/rollback is recorded by ``mlops_common.champion`` (tags on the version that
becomes champion, one event in the registered model's ``audit/`` tags), so ``history`` keeps every move,
the trainer's gate promotions and the rollouts' promotions included.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops_cli.errors import CliError
from mlops_cli.settings import Settings
from mlops_common.champion import AUDIT_PREFIX, TAG_PREVIOUS, Event, end_rollout, move_champion
from mlops_common.rollout import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    TAG_CANARY_PERCENT,
    TAG_MODE,
    TAG_SHADOW_SAMPLE,
    RolloutMode,
    RolloutPolicy,
    Routing,
)

CHAMPION = CHAMPION_ALIAS
CHALLENGER = CHALLENGER_ALIAS
AUC_METRIC = "holdout_roc_auc"


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: list[str]
    auc: float | None
    tags: dict[str, str]

    @property
    def gate_tags(self) -> dict[str, str]:
        return {k: v for k, v in self.tags.items() if k.startswith("gate.")}


@dataclass
class ModelStatus:
    registered_model: str
    triton_model: str
    champion: VersionInfo | None
    challenger: VersionInfo | None
    # Versions Triton reports READY for the platform's model; None if Triton could not be asked.
    served: list[str] | None
    triton_error: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.export_mlflow_client_env()
        self.name = settings.registered_model_name
        self.client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        uri = settings.mlflow_tracking_uri.rstrip("/")
        if uri.startswith(("http://", "https://")):
            # Fail in a second, not after MLflow's retries, when the server is down.
            try:
                httpx.get(f"{uri}/health", timeout=settings.http_timeout_s).raise_for_status()
            except httpx.HTTPError as err:
                raise self._unreachable(err) from None

    # -- reading ------------------------------------------------------------------------------------
    def _unreachable(self, err: Exception) -> CliError:
        return CliError(
            f"cannot reach MLflow at {self.settings.mlflow_tracking_uri} ({type(err).__name__}); "
            "is the stack up (`mlops stack status`)?"
        )

    @staticmethod
    def _is_connection_error(err: MlflowException) -> bool:
        text = str(err.message)
        return "failed with exception" in text or "Max retries exceeded" in text or "Connection refused" in text

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except MlflowException as err:
            if self._is_connection_error(err):
                raise self._unreachable(err) from None
            raise CliError(f"{what}: {str(err.message).splitlines()[0]}") from None
        except Exception as err:  # requests' connection errors after MLflow's retries
            raise self._unreachable(err) from None

    def _missing(self, err: MlflowException) -> bool:
        """True if ``err`` says something does not exist (not that MLflow is unreachable)."""
        if self._is_connection_error(err):
            raise self._unreachable(err) from None
        return True

    def version(self, version: str) -> ModelVersion:
        if not version.isdigit():
            raise CliError(f"model version {version!r}: expected a number, e.g. 3")
        try:
            return self.client.get_model_version(self.name, version)
        except MlflowException as err:
            self._missing(err)
        self._ensure_model()
        known = ", ".join(v.version for v in self._versions()) or "none"
        raise CliError(f"{self.name} has no version {version} (versions: {known})")

    def _versions(self) -> list[ModelVersion]:
        found = self._call("search versions", self.client.search_model_versions, f"name = '{self.name}'")
        return sorted(found, key=lambda v: int(v.version))

    def by_alias(self, alias: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as err:
            self._missing(err)
        self._ensure_model()
        return None

    def _ensure_model(self) -> None:
        try:
            self.client.get_registered_model(self.name)
        except MlflowException as err:
            self._missing(err)
            raise CliError(
                f"no registered model {self.name!r} in MLflow at {self.settings.mlflow_tracking_uri}; "
                "train one first (`mlops train`)"
            ) from None

    def info(self, mv: ModelVersion | None) -> VersionInfo | None:
        if mv is None:
            return None
        auc = None
        if mv.run_id:
            try:
                auc = self.client.get_run(mv.run_id).data.metrics.get(AUC_METRIC)
            except MlflowException:
                auc = None
        return VersionInfo(mv.version, list(mv.aliases or []), auc, dict(mv.tags or {}))

    def status(self) -> ModelStatus:
        champion = self.info(self.by_alias(CHAMPION))
        challenger = self.info(self.by_alias(CHALLENGER))
        served, error = None, None
        try:
            served = triton_ready_versions(self.settings)
        except CliError as err:
            error = str(err)
        return ModelStatus(self.name, self.settings.triton_model_name, champion, challenger, served, error)

    def history(self) -> list[Event]:
        events = []
        for mv in self._versions():
            tags = mv.tags or {}
            if tags.get("gate.decision") == "promoted":
                events.append(
                    Event(
                        at=_iso(datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)),
                        action="gate",
                        version=mv.version,
                        previous=tags.get("gate.champion_version", "none"),
                        by=mv.user_id or "trainer",
                        reason=tags.get("gate.reason", ""),
                    )
                )
        model = self._call("get model", self.client.get_registered_model, self.name)
        for key, value in (model.tags or {}).items():
            if key.startswith(AUDIT_PREFIX):
                try:
                    events.append(Event(**json.loads(value)))
                except (TypeError, ValueError):
                    continue
        return sorted(events, key=lambda e: e.at)

    # -- moving the champion ------------------------------------------------------------------------
    def move_champion(self, version: str, *, action: str, reason: str) -> tuple[str | None, Event]:
        """Point ``champion`` at ``version`` and record who, when, why and the previous champion."""
        reason = _required(reason)
        target = self.version(version)
        current = self.by_alias(CHAMPION)
        previous = current.version if current else None
        if previous == target.version:
            raise CliError(f"version {target.version} of {self.name} is already the champion")
        event = self._call(
            "move the champion",
            lambda: move_champion(
                self.client,
                self.name,
                target.version,
                previous=previous,
                action=action,
                by=self.settings.operator,
                reason=reason,
            ),
        )
        return previous, event

    # -- rollouts of the challenger -----------------------------------------------------------------
    def policy(self) -> tuple[RolloutPolicy, dict[str, str]]:
        """The rollout policy in force (settings' ROLLOUT_* defaults, then the model's tags) and those tags."""
        self._ensure_model()
        model = self._call("get model", self.client.get_registered_model, self.name)
        tags = {k: v for k, v in (model.tags or {}).items() if k.startswith("rollout.")}
        try:
            return RolloutPolicy.from_settings(self.settings).with_tags(tags), tags
        except ValueError as err:
            raise CliError(f"{self.name}: {err}; set it again with `mlops rollout`") from None

    def set_policy(self, mode: RolloutMode, **values: float) -> RolloutPolicy:
        self._ensure_model()
        # The values before the mode that uses them: model sync may read the tags between two writes.
        tags = {}
        if "canary_percent" in values:
            tags[TAG_CANARY_PERCENT] = f"{values['canary_percent']:g}"
        if "shadow_sample" in values:
            tags[TAG_SHADOW_SAMPLE] = f"{values['shadow_sample']:g}"
        tags[TAG_MODE] = mode.value
        for key, value in tags.items():
            self._call("set tag", self.client.set_registered_model_tag, self.name, key, value)
        return self.policy()[0]

    def end_rollout(self, decision: str, reason: str) -> tuple[str, str | None]:
        """Promote the challenger or roll it back; returns (challenger, champion before)."""
        reason = _required(reason)
        challenger = self.by_alias(CHALLENGER)
        if challenger is None:
            raise CliError(f"{self.name} has no challenger: nothing is being rolled out")
        champion = self.by_alias(CHAMPION)
        before = champion.version if champion else None
        self._call(
            "end the rollout",
            lambda: end_rollout(
                self.client,
                self.name,
                challenger.version,
                champion=before,
                decision=decision,
                by=self.settings.operator,
                reason=reason,
            ),
        )
        return challenger.version, before

    def rollback_target(self) -> str:
        """The version recorded as the previous champion of the current champion."""
        current = self.by_alias(CHAMPION)
        if current is None:
            raise CliError(f"{self.name} has no champion to roll back from")
        tags = current.tags or {}
        previous = tags.get(TAG_PREVIOUS) or tags.get("gate.champion_version") or "none"
        if previous == "none" or previous == current.version:
            raise CliError(
                f"champion version {current.version} of {self.name} records no previous champion to roll back to; "
                "use `mlops model promote VERSION --reason ...`"
            )
        return previous


def _required(reason: str) -> str:
    if not reason.strip():
        raise CliError("--reason must say why (it goes into the audit trail)")
    return reason.strip()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def triton_ready_versions(settings: Settings) -> list[str]:
    """Versions of the platform's model that Triton reports READY (its repository index over HTTP)."""
    url = f"{settings.triton_http_base_url}/v2/repository/index"
    try:
        response = httpx.post(url, json={"ready": True}, timeout=settings.http_timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise CliError(f"cannot ask Triton at {settings.triton_http_base_url}: {type(err).__name__}") from None
    return sorted(
        (
            str(entry["version"])
            for entry in response.json()
            if entry.get("name") == settings.triton_model_name and entry.get("state") == "READY" and "version" in entry
        ),
        key=int,
    )


def wait_until_served(settings: Settings, version: str, timeout_s: float, poll_s: float = 0.5) -> float:
    """Block until Triton serves ``version`` and no other version; returns the seconds waited."""
    started = time.monotonic()
    last: list[str] | str = "nothing yet"
    while time.monotonic() - started < timeout_s:
        try:
            last = triton_ready_versions(settings)
            if last == [version]:
                return time.monotonic() - started
        except CliError as err:
            last = str(err)
        time.sleep(poll_s)
    raise CliError(
        f"Triton did not serve version {version} of {settings.triton_model_name} within {timeout_s:.0f} s "
        f"(last seen: {last}); is model sync running (`make serve`)?"
    )


def triton_routing(settings: Settings) -> Routing | None:
    """The routing model sync wrote into the loaded model's config (what the BFFs follow)."""
    url = f"{settings.triton_http_base_url}/v2/models/{settings.triton_model_name}/config"
    try:
        response = httpx.get(url, timeout=settings.http_timeout_s)
    except httpx.HTTPError as err:
        raise CliError(f"cannot ask Triton at {settings.triton_http_base_url}: {type(err).__name__}") from None
    if response.status_code != 200:
        return None
    parameters = {k: v.get("string_value", "") for k, v in response.json().get("parameters", {}).items()}
    return Routing.from_parameters(parameters)
