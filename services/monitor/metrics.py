"""The monitor's Prometheus metrics. Series labelled by ``model``/``version`` (and ``feature``) describe
the last window of one served version; those of a version that no longer serves are removed."""

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from mlops_common.metrics import service_registry

REGISTRY = service_registry()
VERSION = ["model", "version"]

WINDOWS = Counter("monitor_windows", "Monitoring windows evaluated", ["outcome"], registry=REGISTRY)
WINDOW_DURATION = Histogram(
    "monitor_window_duration_seconds",
    "Time to evaluate one window (read tables, compute, report)",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "monitor_last_success_timestamp_seconds", "End of the last window evaluated successfully", registry=REGISTRY
)
WINDOW_SECONDS = Gauge("monitor_window_seconds", "Length of a monitoring window (setting)", registry=REGISTRY)

PREDICTIONS = Gauge("monitor_predictions", "Logged predictions in the last window", VERSION, registry=REGISTRY)
FEATURE_PSI = Gauge(
    "monitor_feature_psi",
    "PSI of a feature against the version's training data",
    [*VERSION, "feature"],
    registry=REGISTRY,
)
FEATURE_DRIFTED = Gauge(
    "monitor_feature_drifted",
    "1 if the feature's PSI reached the threshold (with enough rows), else 0",
    [*VERSION, "feature"],
    registry=REGISTRY,
)
MISSING_RATE = Gauge(
    "monitor_feature_missing_rate",
    "Share of missing values of a feature: in the window (live) and in the training data (reference)",
    [*VERSION, "feature", "population"],
    registry=REGISTRY,
)
SCORE_PSI = Gauge(
    "monitor_score_psi", "PSI of the default probability against the holdout's", VERSION, registry=REGISTRY
)
SCORE_FRACTION = Gauge(
    "monitor_score_fraction",
    "Share of scores in a bin (upper edge `bin`): in the window (live) and on the holdout (reference)",
    [*VERSION, "population", "bin"],
    registry=REGISTRY,
)
SCORE_DRIFTED = Gauge(
    "monitor_score_drifted",
    "1 if the score's PSI reached the threshold (with enough rows), else 0",
    VERSION,
    registry=REGISTRY,
)
PSI_THRESHOLD = Gauge("monitor_drift_psi_threshold", "PSI from which drift is flagged (setting)", registry=REGISTRY)

LABELED = Gauge(
    "monitor_labeled_predictions",
    "Predictions of the lookback with a known outcome (joined on the applicant id)",
    VERSION,
    registry=REGISTRY,
)
LABEL_COVERAGE = Gauge(
    "monitor_label_coverage_ratio",
    "Labelled share of the lookback's predictions that carry an applicant id",
    VERSION,
    registry=REGISTRY,
)
LIVE_AUC = Gauge("monitor_live_roc_auc", "ROC AUC on labelled predictions", VERSION, registry=REGISTRY)
LIVE_LOG_LOSS = Gauge("monitor_live_log_loss", "Log loss on labelled predictions", VERSION, registry=REGISTRY)
CALIBRATION_ERROR = Gauge(
    "monitor_live_calibration_error",
    "Expected calibration error (10 bins) on labelled predictions",
    VERSION,
    registry=REGISTRY,
)
MEAN_PROBABILITY = Gauge(
    "monitor_live_mean_probability",
    "Mean predicted default probability of labelled predictions",
    VERSION,
    registry=REGISTRY,
)
DEFAULT_RATE = Gauge(
    "monitor_live_default_rate", "Observed default rate of labelled predictions", VERSION, registry=REGISTRY
)
AUC_FLOOR = Gauge("monitor_live_auc_floor", "Live ROC AUC below which retraining starts (setting)", registry=REGISTRY)
NEWEST_LABEL = Gauge(
    "monitor_newest_label_timestamp_seconds", "When the newest label was recorded (0: none yet)", registry=REGISTRY
)
LABEL_MAX_AGE = Gauge(
    "monitor_label_max_age_seconds", "Age of the newest label from which it is too old (setting)", registry=REGISTRY
)

DECISIONS = ("triggered", "not_needed", "cooling_down", "already_running", "disabled", "failed")
# Conditions of the policy, in the order they are checked; "none" when no condition holds.
REASONS = ("drift", "live_auc", "new_labels", "schedule")
RETRAINING_DECISIONS = Counter(
    "monitor_retraining_decisions",
    "Retraining decisions, one per window, by decision and by the condition that asked for it",
    ["decision", "reason"],
    registry=REGISTRY,
)
RETRAINING_RUNNING = Gauge("monitor_retraining_running", "1 while a retraining it started runs", registry=REGISTRY)
LAST_RETRAINING = Gauge(
    "monitor_last_retraining_timestamp_seconds",
    "When the monitor last started a retraining, from its MLflow runs (0: never)",
    registry=REGISTRY,
)

# Series of one version that are not about drift (those are removed with the drift figures).
PER_VERSION = (
    PREDICTIONS,
    LABELED,
    LABEL_COVERAGE,
    LIVE_AUC,
    LIVE_LOG_LOSS,
    CALIBRATION_ERROR,
    MEAN_PROBABILITY,
    DEFAULT_RATE,
)
PER_FEATURE = (FEATURE_PSI, FEATURE_DRIFTED)


def initialise() -> None:
    """Every counter at 0 for every label value it can take."""
    for outcome in ("ok", "failed"):
        WINDOWS.labels(outcome)
    RETRAINING_DECISIONS.labels("not_needed", "none")
    for decision in (d for d in DECISIONS if d != "not_needed"):
        for reason in REASONS:
            RETRAINING_DECISIONS.labels(decision, reason)


# -- the rollout analysis (monitor.rollout) ----------------------------------------------------------
ROLLOUT_DECISION_VALUES = ("promoted", "rolled_back")
ROLLOUT_ACTIVE = Gauge(
    "monitor_rollout_active", "1 while a challenger is served in shadow or canary mode", registry=REGISTRY
)
ROLLOUT_CHALLENGER_CALLS = Gauge(
    "monitor_rollout_challenger_calls", "Challenger calls since its rollout started", registry=REGISTRY
)
ROLLOUT_CHECK_VALUE = Gauge(
    "monitor_rollout_check_value",
    "The rollout analysis' figure per check (absent: no data)",
    ["check"],
    registry=REGISTRY,
)
ROLLOUT_CHECK_PASSED = Gauge(
    "monitor_rollout_check_passed", "1: the figure is within its limit, 0: it is not", ["check"], registry=REGISTRY
)
ROLLOUT_DECISIONS = Counter("monitor_rollout_decisions", "Automatic rollout decisions", ["decision"], registry=REGISTRY)
ROLLOUT_ANALYSIS_ERRORS = Counter(
    "monitor_rollout_analysis_errors",
    "Rollout analyses that failed (Prometheus or MLflow unreachable)",
    registry=REGISTRY,
)


def initialise_rollout() -> None:
    for decision in ROLLOUT_DECISION_VALUES:
        ROLLOUT_DECISIONS.labels(decision)


def set_rollout_check(check: str, value: float | None, passed: bool | None) -> None:
    if value is None or passed is None:
        for gauge in (ROLLOUT_CHECK_VALUE, ROLLOUT_CHECK_PASSED):
            with contextlib.suppress(KeyError):
                gauge.remove(check)
        return
    ROLLOUT_CHECK_VALUE.labels(check).set(value)
    ROLLOUT_CHECK_PASSED.labels(check).set(1 if passed else 0)
