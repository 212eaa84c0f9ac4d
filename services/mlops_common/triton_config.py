"""Triton model configuration, generated for two runtimes from one set of values.

``onnxruntime``: Triton's native ONNX Runtime backend, used with the NGC image in the cluster.
``python``: Triton's Python backend running ONNX Runtime in ``model.py``, used where the NGC image
cannot run (machines without Docker). Name, tensors, batching and instance groups are identical;
only the backend differs, so a benchmark or a client sees the same model either way.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from mlops_common.features import MODEL_INPUT, MODEL_OUTPUT, N_FEATURES


class TritonRuntime(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    PYTHON = "python"


ONNX_FILENAME = "model.onnx"
PYTHON_BACKEND_FILENAME = "model.py"


@dataclass(frozen=True)
class TritonModelSpec:
    """The serving shape of the model. The defaults are what `make analyze` settled on (Model Analyzer's search,
    then a side-by-side check: benchmarks/results/model_analyzer.md); model sync renders the local and the
    cluster config from them."""

    name: str = "credit_default"
    # Rows one call may carry: sized for batch scoring's calls (fewer, larger calls cost Triton and the job
    # less per row: benchmarks/results/batch_scoring.md); the API sends at most its MAX_BATCH_SIZE (256), and
    # batch-1 requests leave the dynamic batcher at its preferred sizes long before this.
    max_batch_size: int = 4096
    preferred_batch_sizes: tuple[int, ...] = (32, 128)
    max_queue_delay_us: int = 200
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    # ONNX Runtime threads per instance: more than the pod's CPU share only oversubscribes it.
    intra_op_threads: int = 1
    extra_parameters: dict[str, str] = field(default_factory=dict)


def model_config(
    spec: TritonModelSpec,
    runtime: TritonRuntime,
    *,
    versions: Sequence[int] = (),
    parameters: Mapping[str, str] | None = None,
) -> mc.ModelConfig:
    """The model configuration; ``versions`` pins the served versions (else the newest one is served),
    ``parameters`` are added to the config's (model sync's routing, ``mlops_common.rollout``)."""
    config = mc.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    config.input.add(name=MODEL_INPUT, data_type=mc.TYPE_FP32, dims=[N_FEATURES])
    config.output.add(name=MODEL_OUTPUT, data_type=mc.TYPE_FP32, dims=[2])
    config.dynamic_batching.preferred_batch_size.extend(spec.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    config.instance_group.add(count=spec.instance_count, kind=mc.ModelInstanceGroup.Kind.Value(spec.instance_kind))
    if not versions:
        config.version_policy.latest.num_versions = 1
    else:
        # Pinned, so that moving the champion back to an older version number is served too.
        config.version_policy.specific.versions.extend(sorted(set(versions)))
    if runtime is TritonRuntime.ONNXRUNTIME:
        config.backend = "onnxruntime"
        config.default_model_filename = ONNX_FILENAME
        config.parameters["intra_op_thread_count"].string_value = str(spec.intra_op_threads)
        config.parameters["inter_op_thread_count"].string_value = "1"
    else:
        config.backend = "python"
        config.parameters["intra_op_thread_count"].string_value = str(spec.intra_op_threads)
    for key, value in {**spec.extra_parameters, **(parameters or {})}.items():
        config.parameters[key].string_value = value
    return config


def render_config(
    spec: TritonModelSpec,
    runtime: TritonRuntime,
    *,
    versions: Sequence[int] = (),
    parameters: Mapping[str, str] | None = None,
) -> str:
    return text_format.MessageToString(model_config(spec, runtime, versions=versions, parameters=parameters))


def parse_config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())
