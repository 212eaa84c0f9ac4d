"""The monitor's loop: every window, evaluate the served versions, export the figures, write the
reports, decide about retraining, and record the window as an MLflow run (figures, decision, links)."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from mlops_common.features import FEATURE_NAMES
from mlops_common.reference_profile import SCORE_BIN_EDGES
from mlops_common.s3 import s3_client
from monitor import metrics
from monitor.report import render_report, report_key
from monitor.retraining import Decision, KubernetesLauncher, Launcher, LocalLauncher, Signals, decide
from monitor.settings import Settings
from monitor.window import ProfileCache, VersionWindow, Window, evaluate_window

log = logging.getLogger(__name__)

CHAMPION = "champion"
SCORE_BINS = [*(str(edge) for edge in SCORE_BIN_EDGES), "1"]  # upper edges, as the `bin` label


@dataclass(frozen=True)
class WindowResult:
    window: Window
    champion: str | None
    signals: Signals
    decision: Decision
    run_id: str
    reports: dict[str, str]  # version -> s3:// URI


def launcher_for(settings: Settings) -> Launcher | None:
    if settings.retrain_mode == "local":
        return LocalLauncher()
    if settings.retrain_mode == "kubernetes":
        return KubernetesLauncher.in_cluster(settings)
    return None


class Monitor:
    def __init__(self, settings: Settings, launcher: Launcher | None = None) -> None:
        self.settings = settings
        self.mlflow = MlflowClient(settings.mlflow_tracking_uri)
        self.profiles = ProfileCache(self.mlflow, settings.registered_model_name)
        self.launcher = launcher
        self.s3 = s3_client(settings)
        self.exported: set[tuple[str, str]] = set()
        self._experiment_id: str | None = None
        metrics.initialise()
        metrics.WINDOW_SECONDS.set(settings.monitor_window_s)
        metrics.PSI_THRESHOLD.set(settings.drift_psi_threshold)
        metrics.AUC_FLOOR.set(settings.retrain_min_live_auc)
        metrics.LABEL_MAX_AGE.set(settings.label_max_age_s)

    # -- one window ---------------------------------------------------------------------------------
    def run_window(self, end: datetime | None = None) -> WindowResult:
        started = time.perf_counter()
        try:
            result = self._run_window(end or datetime.now(UTC))
        except Exception:
            metrics.WINDOWS.labels("failed").inc()
            raise
        metrics.WINDOWS.labels("ok").inc()
        metrics.WINDOW_DURATION.observe(time.perf_counter() - started)
        metrics.LAST_SUCCESS.set(result.window.end.timestamp())
        return result

    def _run_window(self, end: datetime) -> WindowResult:
        window = evaluate_window(self.settings, self.profiles, end)
        self.export(window)
        reports = {v.version: self.write_report(window, v) for v in window.versions if v.rows}
        champion = self.champion_version()
        run_id = self.mlflow.create_run(
            self.experiment_id(), start_time=int(end.timestamp() * 1000), run_name=f"window {end:%Y-%m-%d %H:%M:%S}"
        ).info.run_id
        try:
            return self._decide_and_record(run_id, window, champion, reports, end)
        except Exception:
            self.mlflow.set_terminated(run_id, status="FAILED")
            raise

    def _decide_and_record(
        self, run_id: str, window: Window, champion: str | None, reports: dict[str, str], end: datetime
    ) -> WindowResult:
        signals = self.signals(window, champion, end)
        since = signals.seconds_since_last_retraining
        metrics.LAST_RETRAINING.set(0 if since is None else end.timestamp() - since)
        running = self.launcher.running() if self.launcher else False
        metrics.RETRAINING_RUNNING.set(running)
        decision = decide(signals, self.settings, running=running)
        started_what = ""
        if decision.triggered:
            assert self.launcher is not None
            tags = {**signals.tags(), "retraining.reason": decision.reason, "retraining.monitor_run_id": run_id}
            try:
                started_what = self.launcher.start(tags)
                metrics.LAST_RETRAINING.set(end.timestamp())
            except Exception as err:  # the API refused, the process could not start: recorded, retried next window
                log.exception("retraining could not be started")
                decision = Decision("failed", decision.reason, f"{decision.detail}; start failed: {err}"[:480])
        metrics.RETRAINING_DECISIONS.labels(decision.decision, decision.reason).inc()
        log.info(
            "window %s..%s: %s; retraining %s (%s: %s)%s",
            window.start.isoformat(timespec="seconds"),
            window.end.isoformat(timespec="seconds"),
            "; ".join(self._summary(v) for v in window.versions) or "no predictions",
            decision.decision,
            decision.reason,
            decision.detail,
            f" -> {started_what}" if started_what else "",
        )
        self.record(run_id, window, champion, signals, decision, reports, started_what)
        return WindowResult(window, champion, signals, decision, run_id, reports)

    @staticmethod
    def _summary(v: VersionWindow) -> str:
        if not v.rows:
            drift = "no rows"
        elif v.drift is None:
            drift = "no profile"
        else:
            drift = f"drifted {v.drifted_features or 'none'}"
        auc = v.quality.roc_auc if v.quality else None
        return f"v{v.version}: {v.rows} rows, {drift}, score PSI {v.drift.score_psi if v.drift else None}, AUC {auc}"

    # -- MLflow ---------------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.mlflow.get_experiment_by_name(self.settings.monitor_experiment_name)
            self._experiment_id = (
                found.experiment_id if found else self.mlflow.create_experiment(self.settings.monitor_experiment_name)
            )
        return self._experiment_id

    def champion_version(self) -> str | None:
        try:
            return self.mlflow.get_model_version_by_alias(self.settings.registered_model_name, CHAMPION).version
        except MlflowException:
            return None

    def _previous_runs(self, filter_string: str, max_results: int) -> list:
        return self.mlflow.search_runs(
            [self.experiment_id()], filter_string, max_results=max_results, order_by=["attributes.start_time DESC"]
        )

    def signals(self, window: Window, champion: str | None, end: datetime) -> Signals:
        served = window.version(champion)
        drifted = bool(served and served.drifted)
        streak = 0
        if drifted:
            # This window (not recorded yet) and the earlier ones of the same champion, newest first.
            streak = 1
            earlier = self._previous_runs(
                f"tags.`monitor.champion_version` = '{champion}'", self.settings.retrain_drift_windows
            )
            for run in earlier:
                if run.data.tags.get("monitor.champion_drifted") != "true":
                    break
                streak += 1
        last = self._previous_runs("tags.`retraining.decision` = 'triggered'", 1)
        last_started = datetime.fromtimestamp(last[0].info.start_time / 1000, UTC) if last else None
        return Signals(
            champion_version=champion,
            drifted=drifted,
            drift_streak=streak,
            drifted_features=tuple(served.drifted_features) if served else (),
            score_psi=served.drift.score_psi if served and served.drift else None,
            live_auc=served.quality.roc_auc if served and served.quality else None,
            labeled=served.labeled if served else 0,
            new_labels=window.labels_recorded_since(last_started),
            seconds_since_last_retraining=(end - last_started).total_seconds() if last_started else None,
        )

    def record(
        self,
        run_id: str,
        window: Window,
        champion: str | None,
        signals: Signals,
        decision: Decision,
        reports: dict[str, str],
        started_what: str,
    ) -> None:
        """The window as an MLflow run: every figure as a metric (``v<version>/…``), the decision and
        its numbers as tags, the reports as links."""
        stamp = int(window.end.timestamp() * 1000)
        figures: dict[str, float] = {}
        for v in window.versions:
            figures[f"v{v.version}/predictions"] = v.rows
            figures[f"v{v.version}/labeled_predictions"] = v.labeled
            if v.drift:
                figures[f"v{v.version}/score_psi"] = v.drift.score_psi
                figures |= {f"v{v.version}/psi/{name}": d.psi for name, d in v.drift.features.items()}
            if v.quality and v.quality.roc_auc is not None:
                figures[f"v{v.version}/live_roc_auc"] = v.quality.roc_auc
        tags = {
            **signals.tags(),
            "monitor.window_start": window.start.isoformat(),
            "monitor.window_end": window.end.isoformat(),
            "monitor.champion_version": champion or "none",
            "monitor.champion_drifted": str(signals.drifted).lower(),
            "retraining.decision": decision.decision,
            "retraining.reason": decision.reason,
            "retraining.detail": decision.detail[:500],
            **({"retraining.started": started_what} if started_what else {}),
            **{f"monitor.report.v{version}": uri for version, uri in reports.items()},
        }
        self.mlflow.log_batch(
            run_id,
            metrics=[Metric(key, float(value), stamp, 0) for key, value in figures.items()],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )
        self.mlflow.set_terminated(run_id)
        for version, uri in reports.items():
            try:  # linked from the version itself too, for whoever looks at it in the registry
                self.mlflow.set_model_version_tag(
                    self.settings.registered_model_name, version, "monitor.last_report", uri
                )
            except MlflowException as err:
                log.warning("could not tag version %s with its report: %s", version, err)

    # -- reports --------------------------------------------------------------------------------------
    def write_report(self, window: Window, version: VersionWindow) -> str:
        key = report_key(self.settings.monitor_reports_prefix, window, version)
        body = render_report(window, version, self.settings.drift_psi_threshold).encode()
        # One PUT: S3 shows the whole object or none of it.
        self.s3.put_object(Bucket=self.settings.logs_bucket, Key=key, Body=body, ContentType="text/html; charset=utf-8")
        return f"s3://{self.settings.logs_bucket}/{key}"

    # -- Prometheus -----------------------------------------------------------------------------------
    def export(self, window: Window) -> None:
        current = {(v.model, v.version) for v in window.versions}
        for model, version in self.exported - current:
            self._remove(model, version)
        self.exported = current
        newest = window.newest_label_recorded_at
        metrics.NEWEST_LABEL.set(newest.timestamp() if newest else 0)
        for v in window.versions:
            labels = (v.model, v.version)
            metrics.PREDICTIONS.labels(*labels).set(v.rows)
            metrics.LABELED.labels(*labels).set(v.labeled)
            _set_or_remove(metrics.LABEL_COVERAGE, labels, v.label_coverage)
            q = v.quality
            _set_or_remove(metrics.LIVE_AUC, labels, q.roc_auc if q else None)
            _set_or_remove(metrics.LIVE_LOG_LOSS, labels, q.log_loss if q else None)
            _set_or_remove(metrics.CALIBRATION_ERROR, labels, q.expected_calibration_error if q else None)
            _set_or_remove(metrics.MEAN_PROBABILITY, labels, q.mean_probability if q else None)
            _set_or_remove(metrics.DEFAULT_RATE, labels, q.observed_rate if q else None)
            if v.drift is None or v.profile is None:
                self._remove_drift(*labels)
                continue
            metrics.SCORE_PSI.labels(*labels).set(v.drift.score_psi)
            metrics.SCORE_DRIFTED.labels(*labels).set(v.score_drifted)
            flagged = set(v.drifted_features)
            for name, drift in v.drift.features.items():
                metrics.FEATURE_PSI.labels(*labels, name).set(drift.psi)
                metrics.FEATURE_DRIFTED.labels(*labels, name).set(name in flagged)
                metrics.MISSING_RATE.labels(*labels, name, "live").set(drift.missing_rate_live)
                metrics.MISSING_RATE.labels(*labels, name, "reference").set(drift.missing_rate_reference)
            for population, fractions in (
                ("live", v.drift.score_fractions),
                ("reference", v.profile["score"]["fractions"]),
            ):
                for edge, fraction in zip(SCORE_BINS, fractions, strict=True):
                    metrics.SCORE_FRACTION.labels(*labels, population, edge).set(fraction)

    def _remove_drift(self, model: str, version: str) -> None:
        _remove(metrics.SCORE_PSI, (model, version))
        _remove(metrics.SCORE_DRIFTED, (model, version))
        for name in FEATURE_NAMES:
            for gauge in metrics.PER_FEATURE:
                _remove(gauge, (model, version, name))
            for population in ("live", "reference"):
                _remove(metrics.MISSING_RATE, (model, version, name, population))
        for population in ("live", "reference"):
            for edge in SCORE_BINS:
                _remove(metrics.SCORE_FRACTION, (model, version, population, edge))

    def _remove(self, model: str, version: str) -> None:
        for gauge in metrics.PER_VERSION:
            _remove(gauge, (model, version))
        self._remove_drift(model, version)


def _remove(gauge, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


def _set_or_remove(gauge, labels: tuple[str, ...], value: float | None) -> None:
    if value is None:
        _remove(gauge, labels)
    else:
        gauge.labels(*labels).set(value)
