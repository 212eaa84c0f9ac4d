import numpy as np
import onnx
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from mlops_common.features import MODEL_INPUT, MODEL_OUTPUT, N_FEATURES
from trainer.model import ParityError, build_classifier, check_parity, evaluate, export_onnx, onnx_probabilities


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, N_FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values must survive the export too
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 3]) + rng.normal(scale=0.8, size=2000) > 1.2).astype(int)
    return x, y


@pytest.fixture(scope="module")
def model(data):
    return build_classifier({"max_iter": 40}, seed=1).fit(*data)


def test_export_has_the_serving_contract_tensors_only(model):
    exported = export_onnx(model)
    assert [i.name for i in exported.graph.input] == [MODEL_INPUT]
    assert [o.name for o in exported.graph.output] == [MODEL_OUTPUT]
    onnx.checker.check_model(exported)


def test_onnx_matches_sklearn_including_missing_values(model, data):
    x, _ = data
    diff = check_parity(model, export_onnx(model), x, tolerance=1e-5)
    assert diff < 1e-5
    assert np.allclose(onnx_probabilities(export_onnx(model), x).sum(axis=1), 1.0, atol=1e-5)


def test_parity_check_catches_a_different_model(model, data):
    x, y = data
    other = HistGradientBoostingClassifier(max_iter=5, random_state=2).fit(x, y)
    with pytest.raises(ParityError, match=r"ONNX and scikit-learn differ by .* \(tolerance 1e-05\)"):
        check_parity(model, export_onnx(other), x, tolerance=1e-5)


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) n_estimators"):
        build_classifier({"n_estimators": 10}, seed=0)


def test_metrics(data):
    _, y = data
    perfect = evaluate(y, y.astype(float) * 0.98 + 0.01)
    assert perfect.roc_auc == 1.0
    assert evaluate(y, np.full(len(y), 0.5)).roc_auc == 0.5
