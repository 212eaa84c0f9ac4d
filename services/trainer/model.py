"""Fit, evaluate, export to ONNX, and prove the export computes what scikit-learn computes."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss, roc_auc_score

from mlops_common.features import FEATURE_DTYPE, MODEL_INPUT, MODEL_OUTPUT, N_FEATURES

DEFAULT_HYPERPARAMETERS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 300,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 20,
}
ONNX_OPSET = 17


class ParityError(RuntimeError):
    """The ONNX export disagrees with the scikit-learn model beyond the tolerance."""


@dataclass(frozen=True)
class Metrics:
    roc_auc: float
    log_loss: float

    def as_dict(self, prefix: str = "holdout_") -> dict[str, float]:
        return {f"{prefix}roc_auc": self.roc_auc, f"{prefix}log_loss": self.log_loss}


def build_classifier(hyperparameters: dict[str, Any], seed: int) -> HistGradientBoostingClassifier:
    known = HistGradientBoostingClassifier().get_params()
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)}; HistGradientBoostingClassifier takes {sorted(known)}"
        )
    return HistGradientBoostingClassifier(**{**DEFAULT_HYPERPARAMETERS, **hyperparameters, "random_state": seed})


def evaluate(labels: np.ndarray, default_probability: np.ndarray) -> Metrics:
    return Metrics(
        roc_auc=float(roc_auc_score(labels, default_probability)),
        log_loss=float(log_loss(labels, default_probability, labels=[0, 1])),
    )


def export_onnx(model: HistGradientBoostingClassifier) -> onnx.ModelProto:
    """float32 ``features`` [N, n_features] in; ``probabilities`` [N, 2] out (no ZipMap, no label output)."""
    sample = np.zeros((1, N_FEATURES), dtype=FEATURE_DTYPE)
    exported = to_onnx(
        model,
        sample,
        options={id(model): {"zipmap": False}},
        target_opset=ONNX_OPSET,
        naming="credit_",
    )
    graph = exported.graph
    graph.input[0].name, old_input = MODEL_INPUT, graph.input[0].name
    probabilities = next(o for o in graph.output if o.name.endswith("probabilities"))
    old_output = probabilities.name
    probabilities.name = MODEL_OUTPUT
    for node in graph.node:
        node.input[:] = [MODEL_INPUT if name == old_input else name for name in node.input]
        node.output[:] = [MODEL_OUTPUT if name == old_output else name for name in node.output]
    # Serving needs only the probabilities; dropping the label output keeps both Triton configs honest.
    for output in [o for o in graph.output if o.name != MODEL_OUTPUT]:
        graph.output.remove(output)
    onnx.checker.check_model(exported)
    return exported


def onnx_probabilities(model: onnx.ModelProto | bytes, features: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    payload = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    return session.run([MODEL_OUTPUT], {MODEL_INPUT: features.astype(FEATURE_DTYPE)})[0]


def check_parity(
    model: HistGradientBoostingClassifier, exported: onnx.ModelProto, features: np.ndarray, tolerance: float
) -> float:
    """Max |p_onnx - p_sklearn| over ``features``; raises ParityError above ``tolerance``."""
    expected = model.predict_proba(features)[:, 1]
    actual = onnx_probabilities(exported, features)[:, 1]
    max_diff = float(np.max(np.abs(expected - actual)))
    if not max_diff <= tolerance:
        raise ParityError(f"ONNX and scikit-learn differ by {max_diff:.3g} on the holdout (tolerance {tolerance:g})")
    return max_diff
