"""The training job: features from Feast -> model -> ONNX -> MLflow, with the champion gate."""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
from sklearn.model_selection import train_test_split

from feature_store.pipeline import read_raw
from mlops_common.feast_store import open_feature_store
from mlops_common.raw_tables import APPLICATION_TRAIN
from mlops_common.reference_profile import reference_profile
from trainer.dataset import training_set
from trainer.model import build_classifier, check_parity, evaluate, export_onnx, onnx_probabilities
from trainer.registry import GateDecision, describe_version, gate_and_alias, log_and_register
from trainer.settings import Settings

log = logging.getLogger(__name__)
STEPS = 6
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT = "custom_model_development"


@dataclass(frozen=True)
class TrainingRequest:
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    holdout_fraction: float = 0.2
    seed: int = 7
    # When the labels were known; features are joined as of this moment. Defaults to now.
    label_time: datetime | None = None
    # False: register and alias `challenger`, but never move `champion` (a candidate for review).
    promote: bool = True
    # Recorded on the MLflow run and the registered version (the monitor's retraining trigger puts its numbers here).
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingResult:
    run_id: str
    version: str
    metrics: dict[str, float]
    parity_max_abs_diff: float
    decision: GateDecision


@contextmanager
def step(number: int, title: str) -> Iterator[None]:
    log.info("[%d/%d] %s ...", number, STEPS, title)
    started = time.perf_counter()
    yield
    log.info("[%d/%d] %s done in %.1f s", number, STEPS, title, time.perf_counter() - started)


def train(settings: Settings, request: TrainingRequest) -> TrainingResult:
    label_time = request.label_time or datetime.now(UTC)
    with step(1, "reading labels and point-in-time features"):
        applications = read_raw(settings, APPLICATION_TRAIN)
        data = training_set(open_feature_store(settings), applications, label_time)
    with step(2, "splitting holdout"):
        x_train, x_holdout, y_train, y_holdout = train_test_split(
            data.features,
            data.labels,
            test_size=request.holdout_fraction,
            stratify=data.labels,
            random_state=request.seed,
        )
    with step(3, f"training on {len(y_train)} rows"):
        model = build_classifier(request.hyperparameters, request.seed).fit(x_train, y_train)
    with step(4, "exporting to ONNX and checking parity"):
        exported = export_onnx(model)
        parity = check_parity(model, exported, x_holdout, settings.onnx_parity_tolerance)
        log.info("max |p_onnx - p_sklearn| on the holdout: %.3g", parity)
    with step(5, f"evaluating on {len(y_holdout)} holdout rows"):
        # Scored with the ONNX export, the artifact Triton serves, exactly as the champion is scored
        # in the gate: both sides of the comparison then come from the same runtime.
        holdout_scores = onnx_probabilities(exported, x_holdout)[:, 1]
        metrics = evaluate(y_holdout, holdout_scores)
        log.info("holdout ROC AUC %.4f, log loss %.4f", metrics.roc_auc, metrics.log_loss)
        profile = reference_profile(x_train, holdout_scores)

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.set_experiment(settings.mlflow_experiment_name)
    # Shown by the MLflow UI as a model-training experiment (runs, metrics), not its GenAI view.
    mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT)
    params = {
        **model.get_params(),
        "n_iter": model.n_iter_,
        "training_rows": len(y_train),
        "holdout_rows": len(y_holdout),
        "label_time": label_time.isoformat(),
    }
    all_metrics = {**metrics.as_dict(), "onnx_parity_max_abs_diff": parity}
    with step(6, "logging to MLflow, registering and gating"), mlflow.start_run(tags=request.tags or None) as run:
        version = log_and_register(
            model_name=settings.registered_model_name,
            exported=exported,
            holdout_features=x_holdout,
            params=params,
            metrics=all_metrics,
            profile=profile,
            tags=request.tags,
        )
        decision = gate_and_alias(
            model_name=settings.registered_model_name,
            version=version,
            challenger_auc=metrics.roc_auc,
            min_auc=settings.min_holdout_auc,
            holdout_features=x_holdout,
            holdout_labels=y_holdout,
            allow_promotion=request.promote,
        )
        describe_version(
            model_name=settings.registered_model_name,
            version=version,
            training_rows=len(y_train),
            holdout_rows=len(y_holdout),
            label_time=label_time,
            metrics=all_metrics,
            decision=decision,
        )
    return TrainingResult(run.info.run_id, version, all_metrics, parity, decision)
