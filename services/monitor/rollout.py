"""The rollout analysis: while a challenger is served (shadow or canary), compare it with the champion on
the BFFs' per-version series in Prometheus, then promote it or roll it back.

The figures are the ones the rollout dashboard draws, over the time since the rollout started (the
challenger version's ``rollout.started_at`` tag, set when the analysis first sees it): the challenger's
error rate, its p95 Triton latency against the champion's, the shift of its mean score from the
champion's, in shadow mode the share of rows where both decide alike, and, when the monitor has enough
labels for both, live ROC AUC. A rollback needs ``ROLLOUT_MIN_CALLS`` challenger calls; a promotion
also ``ROLLOUT_MIN_DURATION_S``. Like Flagger's and Argo Rollouts' analyses, a figure without data
(no sample yet, no labels) neither passes nor fails its check.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_common.champion import PROMOTED, ROLLED_BACK, ROLLOUT_STARTED_AT, end_rollout
from mlops_common.rollout import CHALLENGER_ALIAS, CHAMPION_ALIAS, RolloutMode, RolloutPolicy
from monitor import metrics
from monitor.settings import Settings

log = logging.getLogger(__name__)

CHALLENGER_ROLES = 'role=~"canary|shadow"'


class PrometheusError(RuntimeError):
    """Prometheus did not answer a query (the analysis waits: no decision without figures)."""


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None  # None: no data yet
    limit: float
    passed: bool | None  # None: not measured

    def describe(self) -> str:
        value = "no data" if self.value is None else f"{self.value:.4g}"
        verdict = {True: "ok", False: "FAILED", None: "not measured"}[self.passed]
        return f"{self.name} {value} (limit {self.limit:g}): {verdict}"


@dataclass(frozen=True)
class Analysis:
    champion: str
    challenger: str
    mode: RolloutMode
    elapsed_s: float
    calls: float
    checks: tuple[Check, ...]
    decision: str  # analysing, promoted, rolled_back

    def summary(self) -> str:
        checks = "; ".join(c.describe() for c in self.checks)
        return (
            f"{self.mode.value} of version {self.challenger} against {self.champion} for {self.elapsed_s:.0f} s, "
            f"{self.calls:.0f} challenger calls: {checks}"
        )

    def figures(self) -> dict[str, str]:
        figures = {"rollout.calls": f"{self.calls:.0f}", "rollout.elapsed_s": f"{self.elapsed_s:.0f}"}
        for check in self.checks:
            figures[f"rollout.{check.name}"] = "no data" if check.value is None else f"{check.value:.6g}"
        return figures


class Prometheus:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def scalar(self, expr: str) -> float | None:
        """The query's single value; None when it has no (finite) value."""
        try:
            answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=self.timeout_s)
            body = answer.json()
        except (httpx.HTTPError, ValueError) as err:
            raise PrometheusError(f"{self.url}: {type(err).__name__}: {err}") from err
        if answer.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{expr}: {body.get('error', answer.status_code)}")
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None


def _within(value: float | None, limit: float, *, at_most: bool) -> bool | None:
    if value is None:
        return None
    return value <= limit if at_most else value >= limit


class RolloutAnalysis:
    def __init__(self, settings: Settings, prometheus: Prometheus | None = None) -> None:
        self.settings = settings
        self.name = settings.registered_model_name
        self.mlflow = MlflowClient(settings.mlflow_tracking_uri)
        self.prometheus = prometheus or Prometheus(settings.prometheus_url, settings.rollout_query_timeout_s)
        metrics.initialise_rollout()

    def _alias(self, alias: str):
        try:
            return self.mlflow.get_model_version_by_alias(self.name, alias)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def step(self) -> Analysis | None:
        """One analysis of the rollout under way, acted upon; None when no challenger is served."""
        champion = self._alias(CHAMPION_ALIAS)
        challenger = self._alias(CHALLENGER_ALIAS)
        tags = self.mlflow.get_registered_model(self.name).tags or {}
        policy = RolloutPolicy.from_settings(self.settings).with_tags(tags)
        if champion is None or challenger is None or challenger.version == champion.version:
            metrics.ROLLOUT_ACTIVE.set(0)
            return None
        if policy.mode is RolloutMode.OFF:
            metrics.ROLLOUT_ACTIVE.set(0)
            return None
        metrics.ROLLOUT_ACTIVE.set(1)
        started = (challenger.tags or {}).get(ROLLOUT_STARTED_AT)
        if started is None:
            started = datetime.now(UTC).isoformat(timespec="seconds")
            self.mlflow.set_model_version_tag(self.name, challenger.version, ROLLOUT_STARTED_AT, started)
        elapsed = max(0.0, (datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds())
        analysis = self.analyse(champion.version, challenger.version, policy.mode, elapsed)
        for check in analysis.checks:
            metrics.set_rollout_check(check.name, check.value, check.passed)
        metrics.ROLLOUT_CHALLENGER_CALLS.set(analysis.calls)
        if analysis.decision != "analysing" and self.settings.rollout_auto_decide:
            self.decide(analysis)
        return analysis

    def analyse(self, champion: str, challenger: str, mode: RolloutMode, elapsed_s: float) -> Analysis:
        s = self.settings
        # At least two scrapes wide, so that increase() has two samples from the start.
        window = f"{max(int(elapsed_s), 2 * int(s.rollout_scrape_interval_s) + 1)}s"
        q = self.prometheus.scalar
        mine = f'version="{challenger}",{CHALLENGER_ROLES}'
        theirs = f'version="{champion}",role="champion"'

        calls = q(f"sum(increase(bff_model_calls_total{{{mine}}}[{window}]))") or 0.0
        failed = q(f'sum(increase(bff_model_calls_total{{{mine},outcome="error"}}[{window}]))') or 0.0
        error_rate = failed / calls if calls > 0 else None

        def p95(selector: str) -> float | None:
            return q(
                f"histogram_quantile(0.95, sum by (le) (increase(bff_model_latency_seconds_bucket{{{selector}}}"
                f"[{window}])))"
            )

        def mean_score(selector: str) -> float | None:
            return q(
                f"sum(increase(bff_model_score_sum{{{selector}}}[{window}])) / "
                f"sum(increase(bff_model_score_count{{{selector}}}[{window}]))"
            )

        mine_p95, theirs_p95 = p95(mine), p95(theirs)
        latency_ratio = mine_p95 / theirs_p95 if mine_p95 is not None and theirs_p95 else None
        mine_mean, theirs_mean = mean_score(mine), mean_score(theirs)
        score_shift = abs(mine_mean - theirs_mean) if mine_mean is not None and theirs_mean is not None else None
        checks = [
            Check(
                "error_rate",
                error_rate,
                s.rollout_max_error_rate,
                _within(error_rate, s.rollout_max_error_rate, at_most=True),
            ),
            Check(
                "latency_p95_ratio",
                latency_ratio,
                s.rollout_max_latency_ratio,
                _within(latency_ratio, s.rollout_max_latency_ratio, at_most=True),
            ),
            Check(
                "score_shift",
                score_shift,
                s.rollout_max_score_shift,
                _within(score_shift, s.rollout_max_score_shift, at_most=True),
            ),
        ]
        if mode is RolloutMode.SHADOW:
            agreement = q(
                f'sum(increase(bff_shadow_comparisons_total{{outcome="agree"}}[{window}])) / '
                f"sum(increase(bff_shadow_comparisons_total[{window}]))"
            )
            checks.append(
                Check(
                    "agreement",
                    agreement,
                    s.rollout_min_agreement,
                    _within(agreement, s.rollout_min_agreement, at_most=False),
                )
            )
        model = s.triton_model_name
        mine_auc = q(f'monitor_live_roc_auc{{model="{model}",version="{challenger}"}}')
        theirs_auc = q(f'monitor_live_roc_auc{{model="{model}",version="{champion}"}}')
        auc_drop = theirs_auc - mine_auc if mine_auc is not None and theirs_auc is not None else None
        checks.append(
            Check(
                "live_auc_drop",
                auc_drop,
                s.rollout_max_auc_drop,
                _within(auc_drop, s.rollout_max_auc_drop, at_most=True),
            )
        )

        decision = "analysing"
        if calls >= s.rollout_min_calls:
            if any(c.passed is False for c in checks):
                decision = ROLLED_BACK
            elif elapsed_s >= s.rollout_min_duration_s:
                decision = PROMOTED
        return Analysis(champion, challenger, mode, elapsed_s, calls, tuple(checks), decision)

    def decide(self, analysis: Analysis) -> None:
        """Promote or roll back (the registry's aliases; model sync and the BFFs follow), recorded on the
        challenger's version with the figures, and counted."""
        failed = [c.describe() for c in analysis.checks if c.passed is False]
        reason = f"automatic analysis: {'; '.join(failed) if failed else 'every check within its limit'}"
        end_rollout(
            self.mlflow,
            self.name,
            analysis.challenger,
            champion=analysis.champion,
            decision=analysis.decision,
            by="monitor",
            reason=reason,
            figures=analysis.figures(),
        )
        metrics.ROLLOUT_DECISIONS.labels(analysis.decision).inc()
        log.warning("rollout %s: %s", analysis.decision, analysis.summary())

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                analysis = self.step()
                if analysis is not None:
                    log.info("rollout %s: %s", analysis.decision, analysis.summary())
            except PrometheusError as err:
                metrics.ROLLOUT_ANALYSIS_ERRORS.inc()
                log.warning("rollout analysis waits for Prometheus: %s", err)
            except Exception:  # MLflow down, a malformed rollout tag: counted, logged, tried again
                metrics.ROLLOUT_ANALYSIS_ERRORS.inc()
                log.exception("rollout analysis failed")
            stop.wait(max(0.0, self.settings.rollout_analysis_interval_s - (time.monotonic() - started)))
