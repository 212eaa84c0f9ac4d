from typing import Literal

from pydantic import Field

from mlops_common.drift import DRIFT_PSI_THRESHOLD, MISSING_RATE_THRESHOLD
from mlops_common.ground_truth import GroundTruthStoreSettings
from mlops_common.rollout import RolloutSettings
from mlops_common.settings import MlflowSettings, TritonSettings


class Settings(GroundTruthStoreSettings, MlflowSettings, RolloutSettings):
    """Settings of ``python -m monitor``: what it reads (the inference-log and ground-truth tables,
    the reference profiles in MLflow), how often, and the retraining policy."""

    # One window of served traffic is compared with the reference every this many seconds.
    monitor_window_s: float = Field(300.0, ge=1)
    monitor_metrics_port: int = 9104
    # The served model's name in the logs (Triton's; TRITON_MODEL_NAME, as the BFF logs it).
    triton_model_name: str = TritonSettings.model_fields["triton_model_name"].default
    # MLflow experiment of the monitor's runs: one per window, with its figures, decision and report.
    monitor_experiment_name: str = "credit-default-monitoring"
    # HTML reports go to s3://LOGS_BUCKET/<this>/<model>/<version>/<window end>.html.
    monitor_reports_prefix: str = Field("monitoring-reports", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
    # A feature (or the score) drifts when its PSI against the reference reaches this.
    drift_psi_threshold: float = Field(DRIFT_PSI_THRESHOLD, gt=0)
    # ... or when its share of missing values moves this much from the training data's.
    drift_missing_rate_threshold: float = Field(MISSING_RATE_THRESHOLD, gt=0, le=1)
    # Fewer logged predictions than this in a window: figures exported, no drift verdict (too noisy).
    drift_min_rows: int = Field(200, ge=1)
    # Live quality joins the predictions of this many past days with the outcomes known so far.
    quality_lookback_days: float = Field(30.0, gt=0)
    # Fewer labelled predictions than this: no live AUC (and no AUC-based retraining).
    quality_min_labeled_rows: int = Field(100, ge=2)
    # The newest label older than this: the "no labels" alert (exported as a gauge for the rule).
    label_max_age_s: float = Field(7 * 86400.0, gt=0)

    # -- retraining policy --------------------------------------------------------------------------
    # off: decide and record, never start a run; local: run `python -m trainer --no-promote` as a child
    # process; kubernetes: create a Job from the trainer CronJob's template (RETRAIN_CRONJOB).
    retrain_mode: Literal["off", "local", "kubernetes"] = "off"
    # Drift of the champion (any feature or the score) in this many consecutive windows.
    retrain_drift_windows: int = Field(3, ge=1)
    # Live ROC AUC of the champion below this (with at least QUALITY_MIN_LABELED_ROWS labels).
    retrain_min_live_auc: float = Field(0.6, ge=0, le=1)
    # This many labels recorded since the last retraining (0: off).
    retrain_new_labels: int = Field(0, ge=0)
    # A retraining at least this often whatever the figures (0: off; the CronJob is the usual schedule).
    retrain_every_s: float = Field(0.0, ge=0)
    # No new retraining sooner than this after the last one started.
    retrain_cooldown_s: float = Field(6 * 3600.0, ge=0)
    # kubernetes mode: the CronJob whose jobTemplate a retraining Job copies, in this pod's namespace.
    retrain_cronjob: str = "mlops-trainer-retrain"
    retrain_namespace: str | None = None  # default: the namespace of the pod's service account

    # -- rollout analysis (monitor.rollout): promote or roll back a served challenger ----------------
    # Decide automatically; false: analyse and export the figures only (`mlops rollout promote|abort`).
    rollout_auto_decide: bool = True
    rollout_analysis_interval_s: float = Field(30.0, gt=0)
    # Prometheus that scrapes the BFFs (and this monitor): the analysis' figures come from there.
    prometheus_url: str = "http://127.0.0.1:9090"
    rollout_query_timeout_s: float = Field(10.0, gt=0)
    # Its scrape interval: the analysis' window is never shorter than two of them.
    rollout_scrape_interval_s: float = Field(30.0, gt=0)
    # Challenger calls before any decision; a promotion also waits ROLLOUT_MIN_DURATION_S.
    rollout_min_calls: int = Field(500, ge=1)
    rollout_min_duration_s: float = Field(600.0, ge=0)
    # The checks: challenger calls that fail or answer outside [0, 1]; its p95 Triton latency over the
    # champion's; |its mean score - the champion's|; shadow: share of rows decided alike; live ROC AUC
    # of the champion minus the challenger's (when the monitor has labels for both).
    rollout_max_error_rate: float = Field(0.01, ge=0, le=1)
    rollout_max_latency_ratio: float = Field(1.5, gt=0)
    rollout_max_score_shift: float = Field(0.1, ge=0, le=1)
    rollout_min_agreement: float = Field(0.9, ge=0, le=1)
    rollout_max_auc_drop: float = Field(0.02, ge=0, le=1)
