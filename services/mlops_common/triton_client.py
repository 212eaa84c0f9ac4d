"""The platform's Triton client (the BFF, the batch-scoring job): one gRPC channel for the process, one
ModelInfer call per version per request or batch, and the routing model sync wrote into the model's config.

It calls Triton's generated gRPC stub (KServe v2 protocol) directly with the features as raw bytes:
tritonclient's client wraps the same stub in per-call InferInput/InferResult objects, which cost more
than the call's own Python work (``benchmarks/serving``, part (e), measures both on the same Triton).
"""

import json

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from mlops_common.errors import DependencyUnavailableError, InferenceError
from mlops_common.features import MODEL_INPUT, MODEL_OUTPUT
from mlops_common.rollout import Routing

# Triton's answers that a retry can cure: it is down, slow, overloaded, or the model is being (re)loaded
# (with explicit model control, an unloaded model is NOT_FOUND). INTERNAL covers a backend that crashed
# and restarts. Anything else (INVALID_ARGUMENT, UNIMPLEMENTED, ...) means the BFF sent what the model
# cannot take: a bug, a 500 that no retry fixes.
TRANSIENT_STATUSES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INTERNAL,
    }
)
SERVICE_CONFIG = {
    # A target naming several addresses (a headless Service: dns:///<release>-triton-headless:8001) gets a
    # connection to each, and calls take them in turn: more Triton pods, more throughput for every BFF pod.
    "loadBalancingConfig": [{"round_robin": {}}],
    # A call that dies with its connection (a Triton pod stopped, a connection reset) is sent again, to
    # another address where the target has several: inference has no side effects, so sending it twice is
    # safe. gRPC retries only before an answer has started, and within the call's one deadline.
    "methodConfig": [
        {
            "name": [{"service": "inference.GRPCInferenceService", "method": "ModelInfer"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}
CHANNEL_OPTIONS = (
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    # Pings keep an idle connection known to be alive through proxies and NAT, as tritonclient does.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 2),
)


class TritonPredictor:
    def __init__(self, url: str, model_name: str, timeout_s: float):
        self._channel = grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self.model_name = model_name
        self.timeout_s = timeout_s

    async def predict(self, features: np.ndarray, *, version: str = "", request_id: str = "") -> tuple[np.ndarray, str]:
        """Default probabilities for each row, and the model version that computed them (``version``
        pins one; ``request_id`` goes to Triton, which shows it in its logs and traces)."""
        request = service_pb2.ModelInferRequest(model_name=self.model_name, model_version=version, id=request_id)
        request.inputs.add(name=MODEL_INPUT, datatype="FP32", shape=features.shape)
        request.outputs.add(name=MODEL_OUTPUT)
        request.raw_input_contents.append(np.ascontiguousarray(features, dtype=np.float32).tobytes())
        try:
            response = await self._stub.ModelInfer(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err) from err
        [output] = response.outputs
        probabilities = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(tuple(output.shape))
        return probabilities[:, 1], response.model_version

    async def routing(self) -> Routing | None:
        """The routing in the loaded model's config (None: a config without one, e.g. an older model sync)."""
        config = await self._config()
        return Routing.from_parameters({k: v.string_value for k, v in config.parameters.items()})

    async def max_batch_size(self) -> int:
        """The most rows one call may carry (the config's max_batch_size)."""
        return (await self._config()).max_batch_size

    async def _config(self):
        request = service_pb2.ModelConfigRequest(name=self.model_name)
        return (await self._stub.ModelConfig(request, timeout=self.timeout_s)).config

    async def version_ready(self, version: str) -> bool:
        return await self._ready(version)

    async def model_ready(self) -> bool:
        return await self._ready("")

    async def _ready(self, version: str) -> bool:
        request = service_pb2.ModelReadyRequest(name=self.model_name, version=version)
        try:
            return (await self._stub.ModelReady(request, timeout=self.timeout_s)).ready
        except grpc.aio.AioRpcError:
            return False

    async def close(self) -> None:
        await self._channel.close()


def check_probabilities(probabilities: np.ndarray, model_name: str, version: str) -> None:
    """A probability outside [0, 1] (NaN too) is an InferenceError: a broken model version, never an answer."""
    invalid = ~((probabilities >= 0) & (probabilities <= 1))  # NaN compares False: invalid too
    if invalid.any():
        raise InferenceError(
            f"model {model_name} version {version} returned {int(invalid.sum())} probabilities "
            f"outside [0, 1] (e.g. {probabilities[invalid][0]!r}) for {len(probabilities)} rows"
        )


def _error(err: grpc.aio.AioRpcError) -> Exception:
    if err.code() in TRANSIENT_STATUSES:
        return DependencyUnavailableError(f"triton: {err.details()}")
    return InferenceError(f"triton refused the request ({err.code()}): {err.details()}")
