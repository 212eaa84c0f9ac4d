from tritonclient.grpc import model_config_pb2 as mc

from bff.settings import Settings as BffSettings
from mlops_common.features import MODEL_INPUT, MODEL_OUTPUT, N_FEATURES
from mlops_common.triton_config import TritonModelSpec, TritonRuntime, parse_config, render_config


def test_native_onnxruntime_config_is_a_valid_model_config_with_the_python_configs_tensors():
    spec = TritonModelSpec(max_batch_size=128, preferred_batch_sizes=(8, 64), instance_count=2)
    native = parse_config(render_config(spec, TritonRuntime.ONNXRUNTIME))
    python = parse_config(render_config(spec, TritonRuntime.PYTHON))
    assert native.backend == "onnxruntime"
    assert native.default_model_filename == "model.onnx"
    assert python.backend == "python"
    for field in ("name", "max_batch_size", "input", "output", "dynamic_batching", "instance_group", "version_policy"):
        assert getattr(native, field) == getattr(python, field), field
    assert [(t.name, t.data_type, list(t.dims)) for t in native.input] == [(MODEL_INPUT, mc.TYPE_FP32, [N_FEATURES])]
    assert [(t.name, t.data_type, list(t.dims)) for t in native.output] == [(MODEL_OUTPUT, mc.TYPE_FP32, [2])]
    assert list(native.dynamic_batching.preferred_batch_size) == [8, 64]
    assert native.instance_group[0].count == 2
    assert native.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_pinned_versions_replace_latest_policy_and_parameters_are_added():
    config = parse_config(
        render_config(TritonModelSpec(), TritonRuntime.PYTHON, versions=[9, 7], parameters={"rollout_mode": "canary"})
    )
    assert list(config.version_policy.specific.versions) == [7, 9]
    assert not config.version_policy.HasField("latest")
    assert config.parameters["rollout_mode"].string_value == "canary"
    assert config.parameters["intra_op_thread_count"].string_value == "1"


def test_the_served_model_takes_the_apis_largest_batch_in_one_call():
    # The BFF sends a whole /predict/batch as one Triton call: a model max below the API's limit would refuse it.
    assert TritonModelSpec().max_batch_size >= BffSettings.model_fields["max_batch_size"].default
