"""The retraining trigger: a policy over the champion's figures (pure, :func:`decide`), the history it
needs (kept in MLflow, so a restarted monitor keeps its cool-down and drift streak), and the launchers
that start the training pipeline: a child process locally, a Job from the trainer CronJob's template
in the cluster. A retrained model is registered with ``--no-promote``: it enters as ``challenger``
through the trainer's gate, and never takes traffic by itself."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from monitor.settings import Settings

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The label of the Jobs the monitor creates, and of the trainer's pods, for "one at a time".
TRIGGERED_BY_LABEL = "mlops.platform/triggered-by"


@dataclass(frozen=True)
class Signals:
    """What the policy looks at, about the champion (the version that answers)."""

    champion_version: str | None
    drifted: bool  # in this window (enough rows, some feature or the score at the PSI threshold)
    drift_streak: int  # consecutive windows with drift, this one included
    drifted_features: tuple[str, ...]
    score_psi: float | None
    live_auc: float | None  # None: not enough labelled predictions
    labeled: int
    new_labels: int  # labels recorded since the last retraining started (all of them if never)
    seconds_since_last_retraining: float | None  # None: never retrained by the monitor

    def tags(self) -> dict[str, str]:
        """The numbers behind a decision, as MLflow tags (on the monitor's run and the training run)."""
        return {
            "retraining.champion_version": self.champion_version or "none",
            "retraining.drift_streak": str(self.drift_streak),
            "retraining.drifted_features": ",".join(self.drifted_features) or "none",
            "retraining.score_psi": "none" if self.score_psi is None else f"{self.score_psi:.4f}",
            "retraining.live_auc": "none" if self.live_auc is None else f"{self.live_auc:.4f}",
            "retraining.labeled_predictions": str(self.labeled),
            "retraining.new_labels": str(self.new_labels),
        }


@dataclass(frozen=True)
class Decision:
    decision: str  # one of monitor.metrics.DECISIONS
    reason: str  # the condition that asked for a retraining (monitor.metrics.REASONS), or "none"
    detail: str  # the numbers, for the log

    @property
    def triggered(self) -> bool:
        return self.decision == "triggered"


def wanted(signals: Signals, settings: Settings) -> tuple[str, str] | None:
    """The first condition of the policy that holds, with its numbers; None when none does."""
    if signals.drift_streak >= settings.retrain_drift_windows:
        features = ", ".join(signals.drifted_features) or "score only"
        return (
            "drift",
            f"drift in {signals.drift_streak} consecutive windows ({features}; score PSI {signals.score_psi})",
        )
    if signals.live_auc is not None and signals.live_auc < settings.retrain_min_live_auc:
        return (
            "live_auc",
            f"live ROC AUC {signals.live_auc:.4f} < {settings.retrain_min_live_auc} on {signals.labeled} labels",
        )
    if settings.retrain_new_labels and signals.new_labels >= settings.retrain_new_labels:
        return "new_labels", f"{signals.new_labels} new labels >= {settings.retrain_new_labels}"
    if settings.retrain_every_s and (
        signals.seconds_since_last_retraining is None
        or signals.seconds_since_last_retraining >= settings.retrain_every_s
    ):
        return "schedule", f"no retraining for {settings.retrain_every_s:.0f} s"
    return None


def decide(signals: Signals, settings: Settings, *, running: bool) -> Decision:
    condition = wanted(signals, settings)
    if condition is None:
        return Decision("not_needed", "none", "no condition of the policy holds")
    reason, detail = condition
    if settings.retrain_mode == "off":
        return Decision("disabled", reason, f"{detail}; RETRAIN_MODE=off")
    if running:
        return Decision("already_running", reason, f"{detail}; a retraining is still running")
    since = signals.seconds_since_last_retraining
    if since is not None and since < settings.retrain_cooldown_s:
        return Decision(
            "cooling_down",
            reason,
            f"{detail}; last retraining {since:.0f} s ago < cool-down {settings.retrain_cooldown_s:.0f} s",
        )
    return Decision("triggered", reason, detail)


def trainer_arguments(tags: dict[str, str]) -> list[str]:
    """Arguments for ``python -m trainer``: a challenger only, with the trigger's numbers as tags."""
    return ["--no-promote", *(f"--tag={key}={value}" for key, value in sorted(tags.items()))]


class Launcher(Protocol):
    def running(self) -> bool: ...

    def start(self, tags: dict[str, str]) -> str:
        """Start a training run; returns what was started (for the log and the tags)."""
        ...


class LocalLauncher:
    """``python -m trainer`` as a child process with the monitor's environment (the local stack's), or
    ``env`` when given; its output goes to the monitor's own (its log file under .stack/logs/)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, tags: dict[str, str]) -> str:
        self.process = subprocess.Popen([sys.executable, "-m", "trainer", *trainer_arguments(tags)], env=self.env)
        return f"local process {self.process.pid}"


def job_from_cronjob(cronjob: dict[str, Any], name: str, tags: dict[str, str]) -> dict[str, Any]:
    """What ``kubectl create job --from=cronjob/…`` creates, with the trainer container's arguments
    extended by :func:`trainer_arguments` and a label saying the monitor made it."""
    template = cronjob["spec"]["jobTemplate"]
    spec = dict(template["spec"])
    pod = dict(spec["template"])
    pod_spec = dict(pod["spec"])
    containers = [dict(c) for c in pod_spec["containers"]]
    trainer = next((c for c in containers if c["name"] == "trainer"), None)
    if trainer is None:
        raise ValueError(f"CronJob {cronjob['metadata']['name']} has no container named trainer")
    trainer["args"] = [*trainer.get("args", []), *trainer_arguments(tags)]
    pod_spec["containers"] = containers
    pod["spec"] = pod_spec
    pod["metadata"] = {
        **pod.get("metadata", {}),
        "labels": {**pod.get("metadata", {}).get("labels", {}), TRIGGERED_BY_LABEL: "monitor"},
    }
    spec["template"] = pod
    metadata = template.get("metadata", {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cronjob["metadata"]["namespace"],
            "labels": {
                **cronjob["metadata"].get("labels", {}),
                **metadata.get("labels", {}),
                TRIGGERED_BY_LABEL: "monitor",
            },
            "annotations": {**metadata.get("annotations", {}), "cronjob.kubernetes.io/instantiate": "manual"},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cronjob["metadata"]["name"],
                    "uid": cronjob["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": spec,
    }


class KubernetesLauncher:
    """A Job from the trainer CronJob's template, through the Kubernetes API (the chart's Role allows
    reading that one CronJob, and listing and creating Jobs, in the release's namespace)."""

    def __init__(self, cronjob: str, namespace: str, api: Any) -> None:
        self.cronjob = cronjob
        self.namespace = namespace
        self.api = api  # kubernetes.client.BatchV1Api

    @classmethod
    def in_cluster(cls, settings: Settings) -> KubernetesLauncher:
        from kubernetes import client, config

        config.load_incluster_config()
        namespace = settings.retrain_namespace or SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        return cls(settings.retrain_cronjob, namespace, client.BatchV1Api())

    def running(self) -> bool:
        """A Job of the trainer CronJob (scheduled or triggered) still has active pods."""
        jobs = self.api.list_namespaced_job(self.namespace)
        return any(
            (job.status.active or 0) > 0
            for job in jobs.items
            if any(ref.name == self.cronjob for ref in job.metadata.owner_references or [])
        )

    def start(self, tags: dict[str, str]) -> str:
        cronjob = self.api.api_client.sanitize_for_serialization(
            self.api.read_namespaced_cron_job(self.cronjob, self.namespace)
        )
        name = f"{self.cronjob[:40]}-auto-{datetime.now(UTC):%m%d%H%M%S}"
        self.api.create_namespaced_job(self.namespace, job_from_cronjob(cronjob, name, tags))
        return f"Job {self.namespace}/{name}"
