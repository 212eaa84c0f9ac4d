import pytest

from mlops_common.triton_config import TritonModelSpec, TritonRuntime, parse_config
from model_sync.repository import InvalidModelError, ModelRepository
from trainer.model import build_classifier, export_onnx


@pytest.fixture(scope="module")
def model_bytes():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10)).astype(np.float32)
    return export_onnx(build_classifier({"max_iter": 5}, 0).fit(x, x[:, 0] > 0)).SerializeToString()


@pytest.mark.parametrize("runtime", list(TritonRuntime))
def test_install_select_and_prune(tmp_path, model_bytes, runtime):
    repo = ModelRepository(tmp_path / "repository", TritonModelSpec(name="m"), runtime)
    repo.install(3, model_bytes)
    repo.install(4, model_bytes)
    repo.select([4], {"rollout_champion": "4"})
    assert repo.versions() == [3, 4]
    files = {p.name for p in (repo.model_dir / "4").iterdir()}
    assert files == ({"model.onnx", "model.py"} if runtime is TritonRuntime.PYTHON else {"model.onnx"})
    config = parse_config((repo.model_dir / "config.pbtxt").read_text())
    assert list(config.version_policy.specific.versions) == [4]
    assert config.backend == runtime.value
    assert config.parameters["rollout_champion"].string_value == "4"
    repo.remove_versions_except({4})
    assert repo.versions() == [4]
    # Staging happens beside the repository, never inside it, and leaves nothing behind.
    assert not any(repo.staging_root.iterdir())


def test_a_corrupt_model_is_refused_before_it_reaches_the_repository(tmp_path, model_bytes):
    repo = ModelRepository(tmp_path / "repository", TritonModelSpec(name="m"), TritonRuntime.PYTHON)
    with pytest.raises(InvalidModelError, match="ONNX Runtime cannot open the model"):
        repo.install(1, model_bytes[: len(model_bytes) // 2])
    assert repo.versions() == []


def test_a_model_with_other_tensors_is_refused(tmp_path):
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(50, 10)).astype(np.float32)
    wrong = to_onnx(LogisticRegression().fit(x, x[:, 0] > 0), x[:1], target_opset=17).SerializeToString()
    repo = ModelRepository(tmp_path / "repository", TritonModelSpec(name="m"), TritonRuntime.PYTHON)
    with pytest.raises(InvalidModelError, match="expected input 'features'"):
        repo.install(1, wrong)
