"""Log a trained model to MLflow, register it, and decide whether it becomes the champion."""

import json
import logging
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import onnx
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from mlops_common.features import FEATURE_DTYPE, FEATURE_NAMES, FEATURE_SERVICE, MODEL_INPUT, MODEL_OUTPUT
from mlops_common.reference_profile import PROFILE_ARTIFACT
from mlops_common.triton_config import TritonModelSpec, TritonRuntime, render_config
from trainer.model import evaluate, onnx_probabilities

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
FEATURES_TAG = "feature_names"


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    challenger_auc: float
    champion_auc: float | None
    champion_version: str | None
    reason: str

    def tags(self) -> dict[str, str]:
        return {
            "gate.decision": "promoted" if self.promoted else "kept_as_challenger",
            "gate.challenger_auc": f"{self.challenger_auc:.6f}",
            "gate.champion_auc": "none" if self.champion_auc is None else f"{self.champion_auc:.6f}",
            "gate.champion_version": self.champion_version or "none",
            "gate.reason": self.reason,
        }


MODEL_DESCRIPTION = (
    "Probability that a Home Credit applicant defaults (TARGET = 1), from the ten features of the "
    "FeatureService {service}: {features}. HistGradientBoosting exported to ONNX (parity-checked against "
    "scikit-learn) and served by Triton as the platform's champion. Every version records its data, "
    "holdout metrics and the quality gate's decision in its description and its gate.* tags; the alias "
    "`champion` is what serves, `challenger` the latest candidate."
)


def describe_version(
    *,
    model_name: str,
    version: str,
    training_rows: int,
    holdout_rows: int,
    label_time: Any,
    metrics: dict[str, float],
    decision: GateDecision,
) -> None:
    """Descriptions the MLflow UI shows: what the model is, and for this version its data, metrics
    and why it is (not) the champion."""
    client = MlflowClient()
    client.update_registered_model(
        model_name, description=MODEL_DESCRIPTION.format(service=FEATURE_SERVICE, features=", ".join(FEATURE_NAMES))
    )
    verdict = "champion" if decision.promoted else "challenger"
    champion = "none" if decision.champion_auc is None else f"{decision.champion_auc:.4f}"
    client.update_model_version(
        model_name,
        version,
        description=(
            f"{verdict.upper()}: {decision.reason}. Holdout ROC AUC {metrics['holdout_roc_auc']:.4f} "
            f"(champion then: version {decision.champion_version or 'none'}, AUC {champion}), log loss "
            f"{metrics['holdout_log_loss']:.4f}, ONNX parity {metrics['onnx_parity_max_abs_diff']:.2g}. "
            f"Trained on {training_rows} rows, holdout {holdout_rows} rows, labels as of {label_time}."
        ),
    )


def feature_contract() -> dict[str, Any]:
    return {
        "feature_service": FEATURE_SERVICE,
        "feature_names": list(FEATURE_NAMES),
        "dtype": np.dtype(FEATURE_DTYPE).name,
        "input": MODEL_INPUT,
        "output": MODEL_OUTPUT,
    }


def log_and_register(
    *,
    model_name: str,
    exported: onnx.ModelProto,
    holdout_features: np.ndarray,
    params: dict[str, Any],
    metrics: dict[str, float],
    profile: dict[str, Any],
    tags: dict[str, str],
) -> str:
    """Log params, metrics, the ONNX model, its contract and its reference profile in the active run;
    register it with ``tags`` (why it was trained, e.g. the monitor's retraining numbers) besides the
    feature list; returns the new version."""
    mlflow.log_params(params)
    mlflow.log_metrics(metrics)
    example = holdout_features[:2]
    signature = infer_signature(example, onnx_probabilities(exported, example))
    info = mlflow.onnx.log_model(
        exported,
        name="model",
        signature=signature,
        input_example=example,
        registered_model_name=model_name,
        save_as_external_data=False,
    )
    mlflow.log_dict(feature_contract(), "features.json")
    mlflow.log_dict(profile, PROFILE_ARTIFACT)
    spec = TritonModelSpec()
    for runtime in TritonRuntime:
        mlflow.log_text(render_config(spec, runtime), f"triton/{runtime.value}/config.pbtxt")
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in {**tags, FEATURES_TAG: ",".join(FEATURE_NAMES)}.items():
        client.set_model_version_tag(model_name, version, key, value)
    return version


@dataclass(frozen=True)
class ChampionScore:
    version: str | None = None
    auc: float | None = None
    # Why the champion could not be scored (its artifacts could not be loaded), if so.
    unusable: str | None = None


def _score_champion(client: MlflowClient, model_name: str, features: np.ndarray, labels: np.ndarray) -> ChampionScore:
    """The current champion's AUC on *this* holdout, so both models are judged on the same rows."""
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return ChampionScore()
    if champion.tags.get(FEATURES_TAG) != ",".join(FEATURE_NAMES):
        # Different inputs: it cannot score these rows, so fall back to its own recorded holdout AUC.
        recorded = client.get_run(champion.run_id).data.metrics.get("holdout_roc_auc")
        return ChampionScore(champion.version, recorded)
    try:
        model = mlflow.onnx.load_model(f"models:/{model_name}@{CHAMPION}")
    except (MlflowException, OSError) as err:
        log.warning(
            "champion version %s of %s cannot be loaded from %s: %s. Its artifacts are gone or unreadable; "
            "most likely the registry (PostgreSQL) outlived the artifact store it points at, e.g. a deleted "
            "or re-cloned .stack/ whose MLflow database was kept. Rule: a champion that cannot be loaded "
            "cannot be served either, so the new version replaces it if it passes the AUC floor (recorded "
            "in the gate.reason tag). For a clean local registry: make stack-reset",
            champion.version,
            model_name,
            champion.source,
            err,
        )
        return ChampionScore(champion.version, unusable=f"{type(err).__name__}: {err}"[:300])
    return ChampionScore(champion.version, evaluate(labels, onnx_probabilities(model, features)[:, 1]).roc_auc)


def gate_and_alias(
    *,
    model_name: str,
    version: str,
    challenger_auc: float,
    min_auc: float,
    holdout_features: np.ndarray,
    holdout_labels: np.ndarray,
    allow_promotion: bool = True,
) -> GateDecision:
    """Alias the new version ``challenger``; move ``champion`` to it only if it is at least as good,
    or if the champion's artifacts cannot be loaded (it could not be served either). Never below
    ``min_auc``, and never when ``allow_promotion`` is False (the version stays a challenger)."""
    client = MlflowClient()
    champion = _score_champion(client, model_name, holdout_features, holdout_labels)
    champion_version, champion_auc = champion.version, champion.auc
    if not allow_promotion:
        decision = GateDecision(False, challenger_auc, champion_auc, champion_version, "promotion not requested")
    elif challenger_auc < min_auc:
        decision = GateDecision(
            False, challenger_auc, champion_auc, champion_version, f"holdout AUC below floor {min_auc}"
        )
    elif champion.unusable:
        decision = GateDecision(
            True,
            challenger_auc,
            None,
            champion_version,
            f"champion version {champion_version} cannot be loaded ({champion.unusable})",
        )
    elif champion_auc is None:
        decision = GateDecision(True, challenger_auc, None, None, "no champion yet")
    elif challenger_auc >= champion_auc:
        decision = GateDecision(
            True, challenger_auc, champion_auc, champion_version, "at least as good as the champion"
        )
    else:
        decision = GateDecision(False, challenger_auc, champion_auc, champion_version, "worse than the champion")

    client.set_registered_model_alias(model_name, CHALLENGER, version)
    if decision.promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    for key, value in decision.tags().items():
        client.set_model_version_tag(model_name, version, key, value)
    mlflow.set_tags(decision.tags())
    log.info("quality gate: %s", json.dumps(decision.tags()))
    return decision
