"""The monitor on the real stack: the session's S3 (inference-log and ground-truth Delta tables),
MLflow (the versions' reference profiles, the monitor's runs) and Feast (the very rows the model was
trained on, as unshifted traffic). Logged predictions are written into the table directly (the way
there, BFF -> RabbitMQ -> log worker, is tested in tests/log_worker and tests/observability)."""

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import onnx
import pyarrow as pa
import pytest
from platform_fixtures import QUICK_MODEL, settings_from
from sklearn.metrics import roc_auc_score

from feature_store.pipeline import read_raw
from mlops_common.feast_store import open_feature_store
from mlops_common.features import FEATURE_NAMES
from mlops_common.ground_truth import Label, write_labels
from mlops_common.inference_log import TABLE_SCHEMA, open_inference_log_table, write_inference_log_rows
from mlops_common.raw_tables import APPLICATION_TRAIN
from monitor.retraining import LocalLauncher
from monitor.service import Monitor
from monitor.settings import Settings
from trainer.dataset import TrainingSet, training_set
from trainer.model import onnx_probabilities
from trainer.settings import Settings as TrainerSettings
from trainer.train import TrainingRequest, train

pytestmark = pytest.mark.integration

SHIFTED = "AMT_INCOME_TOTAL"
ROWS_PER_WINDOW = 600
WINDOW_S = 600


@dataclass(frozen=True)
class Monitored:
    env: dict[str, str]
    version: str  # the champion, served
    data: TrainingSet  # the rows it was trained on (features, labels, applicant ids)
    model: onnx.ModelProto  # its ONNX export, to score traffic as Triton would


@pytest.fixture(scope="module")
def monitored(trained_platform, unique_name):
    """A model of its own (the retraining adds versions to it), its training rows and its scorer."""
    env = {**trained_platform.env, "REGISTERED_MODEL_NAME": unique_name("monitored"), "TRITON_MODEL_NAME": "monitored"}
    trainer_settings = settings_from(TrainerSettings, env)
    result = train(trainer_settings, TrainingRequest(hyperparameters=QUICK_MODEL))
    data = training_set(
        open_feature_store(trainer_settings), read_raw(trainer_settings, APPLICATION_TRAIN), datetime.now(UTC)
    )
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    model = mlflow.onnx.load_model(f"models:/{env['REGISTERED_MODEL_NAME']}/{result.version}")
    return Monitored(env, result.version, data, model)


def log_rows(settings: Settings, version: str, features: np.ndarray, scores: np.ndarray, ids, at: datetime) -> None:
    n = len(scores)
    rows = {
        "schema_version": [2] * n,
        "request_id": [str(uuid.uuid4()) for _ in range(n)],
        "timestamp": [at - timedelta(milliseconds=i) for i in range(n)],
        "entity_id": [int(i) for i in ids],
        "model_name": [settings.triton_model_name] * n,
        "model_version": [version] * n,
        **{name: features[:, i].astype(np.float64) for i, name in enumerate(FEATURE_NAMES)},
        "store_features": [list(FEATURE_NAMES)] * n,
        "probability": scores.astype(np.float64),
        "decision": ["approve"] * n,
        "latency_ms": [1.0] * n,
        "role": ["champion"] * n,
        "date": [f"{at - timedelta(milliseconds=i):%Y-%m-%d}" for i in range(n)],
    }
    open_inference_log_table(settings)  # as the log worker does at start
    assert write_inference_log_rows(settings, pa.Table.from_pydict(rows, schema=TABLE_SCHEMA)) == n


def traffic(monitored: Monitored, settings: Settings, at: datetime, *, shift: float, seed: int) -> np.ndarray:
    """ROWS_PER_WINDOW of the training applicants, scored by the served version, logged just before ``at``;
    ``SHIFTED`` multiplied by ``shift``. Returns the row indices."""
    version, data, model = monitored.version, monitored.data, monitored.model
    rows = np.random.default_rng(seed).choice(len(data.labels), ROWS_PER_WINDOW, replace=False)
    features = data.features[rows].copy()
    features[:, FEATURE_NAMES.index(SHIFTED)] *= shift
    scores = onnx_probabilities(model, features)[:, 1]
    log_rows(settings, version, features, scores, data.entity_ids[rows], at)
    return rows


def monitor_settings(env: dict[str, str], **overrides: str) -> Settings:
    return settings_from(
        Settings,
        {**env, "MONITOR_WINDOW_S": str(WINDOW_S), "QUALITY_MIN_LABELED_ROWS": "100", **overrides},
    )


def test_unshifted_traffic_is_quiet_a_shifted_feature_is_flagged_alone_and_auc_matches(monitored, unique_name):
    env, version, data = monitored.env, monitored.version, monitored.data
    settings = monitor_settings(
        env,
        LOGS_PREFIX=unique_name("logs"),
        GROUND_TRUTH_PREFIX=unique_name("ground-truth"),
        MONITOR_EXPERIMENT_NAME=unique_name("monitoring"),
    )
    monitor = Monitor(settings)
    now = datetime.now(UTC).replace(microsecond=0)

    quiet_end = now - timedelta(seconds=2 * WINDOW_S)
    rows = traffic(monitored, settings, quiet_end - timedelta(seconds=5), shift=1.0, seed=1)
    quiet = monitor.run_window(quiet_end)
    served = quiet.window.version(version)
    assert served.rows == ROWS_PER_WINDOW
    assert served.drift is not None
    assert served.enough_rows
    assert served.drifted_features == [], {n: d.psi for n, d in served.drift.features.items()}
    assert not served.score_drifted, served.drift.score_psi
    assert quiet.decision.decision == "not_needed"
    assert quiet.reports[version].startswith(f"s3://{settings.logs_bucket}/{settings.monitor_reports_prefix}/")

    traffic(monitored, settings, now - timedelta(seconds=5), shift=1.6, seed=2)
    shifted = monitor.run_window(now).window.version(version)
    assert shifted.drifted_features == [SHIFTED], {n: d.psi for n, d in shifted.drift.features.items()}

    # Outcomes arrive for the quiet window's applicants: the live AUC is scikit-learn's on the same rows.
    # (A window ending just after the quiet one: the shifted rows, logged later, are not in its lookback.)
    observed = quiet_end + timedelta(days=1)
    labels = [
        Label(applicant_id=int(data.entity_ids[i]), outcome=int(data.labels[i]), observed_at=observed) for i in rows
    ]
    write_labels(settings, labels)
    labelled = monitor.run_window(quiet_end + timedelta(seconds=1)).window.version(version)
    assert labelled.labeled == ROWS_PER_WINDOW
    assert labelled.quality is not None
    scores = onnx_probabilities(monitored.model, data.features[rows])[:, 1]
    assert labelled.quality.roc_auc == pytest.approx(roc_auc_score(data.labels[rows], scores), abs=1e-9)


def test_sustained_drift_triggers_one_retraining_and_a_challenger_with_its_numbers(monitored, unique_name):
    env, version = monitored.env, monitored.version
    settings = monitor_settings(
        env,
        LOGS_PREFIX=unique_name("logs"),
        GROUND_TRUTH_PREFIX=unique_name("ground-truth"),
        MONITOR_EXPERIMENT_NAME=unique_name("monitoring"),
        RETRAIN_MODE="local",
        RETRAIN_DRIFT_WINDOWS="2",
        RETRAIN_COOLDOWN_S="3600",
    )
    launcher = LocalLauncher(env={**os.environ, **env, "MLFLOW_EXPERIMENT_NAME": unique_name("retraining")})
    monitor = Monitor(settings, launcher)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=4 * WINDOW_S)
    decisions = []
    for n in range(4):
        end = start + timedelta(seconds=n * WINDOW_S)
        traffic(monitored, settings, end - timedelta(seconds=5), shift=1.6, seed=10 + n)
        result = monitor.run_window(end)
        decisions.append(result.decision.decision)
        if result.decision.triggered:
            triggered = result
            assert launcher.process.wait(timeout=300) == 0  # the next windows see it finished: cool-down holds
    # Drift in the 1st window is not yet "2 consecutive"; the 2nd triggers; the cool-down holds the rest.
    assert decisions == ["not_needed", "triggered", "cooling_down", "cooling_down"]
    assert triggered.signals.drift_streak == 2
    assert SHIFTED in triggered.signals.drifted_features

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    challenger = client.get_model_version_by_alias(env["REGISTERED_MODEL_NAME"], "challenger")
    assert int(challenger.version) > int(version)
    assert client.get_model_version_by_alias(env["REGISTERED_MODEL_NAME"], "champion").version == version
    tags = challenger.tags
    assert tags["retraining.reason"] == "drift"
    assert tags["retraining.drift_streak"] == "2"
    assert SHIFTED in tags["retraining.drifted_features"].split(",")
    assert tags["retraining.monitor_run_id"] == triggered.run_id
    assert tags["gate.reason"] == "promotion not requested"
    assert client.get_run(challenger.run_id).data.tags["retraining.reason"] == "drift"
    # Every window's decision is on its MLflow run, with its numbers.
    window_run = client.get_run(triggered.run_id).data
    assert window_run.tags["retraining.decision"] == "triggered"
    assert window_run.tags["retraining.drift_streak"] == "2"
    assert window_run.metrics[f"v{version}/psi/{SHIFTED}"] >= settings.drift_psi_threshold
