"""The BFF's Triton client: one gRPC channel for the process, one infer call per version per request
or batch, and the routing model sync wrote into the model's config."""

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from bff.errors import DependencyUnavailableError, InferenceError
from mlops_common.features import MODEL_INPUT, MODEL_OUTPUT
from mlops_common.rollout import Routing

# Triton's answers that a retry can cure: it is down, slow, overloaded, or the model is being (re)loaded
# (with explicit model control, an unloaded model is NOT_FOUND). INTERNAL covers a backend that crashed
# and restarts. Anything else (INVALID_ARGUMENT, UNIMPLEMENTED, ...) means the BFF sent what the model
# cannot take: a bug, a 500 that no retry fixes.
TRANSIENT_STATUSES = frozenset(
    f"StatusCode.{name}"
    for name in (
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
        "CANCELLED",
        "NOT_FOUND",
        "INTERNAL",
    )
)


class TritonPredictor:
    def __init__(self, url: str, model_name: str, timeout_s: float):
        self.client = grpcclient.InferenceServerClient(url)
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._outputs = [grpcclient.InferRequestedOutput(MODEL_OUTPUT)]

    async def predict(self, features: np.ndarray, *, version: str = "", request_id: str = "") -> tuple[np.ndarray, str]:
        """Default probabilities for each row, and the model version that computed them (``version``
        pins one; ``request_id`` goes to Triton, which shows it in its logs and traces)."""
        infer_input = grpcclient.InferInput(MODEL_INPUT, list(features.shape), "FP32")
        infer_input.set_data_from_numpy(features)
        try:
            result = await self.client.infer(
                self.model_name,
                [infer_input],
                model_version=version,
                outputs=self._outputs,
                request_id=request_id,
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as err:
            # No status: the client gave up (client_timeout) or could not connect.
            if err.status() is None or err.status() in TRANSIENT_STATUSES:
                raise DependencyUnavailableError(f"triton: {err.message()}") from err
            raise InferenceError(f"triton refused the request ({err.status()}): {err.message()}") from err
        return result.as_numpy(MODEL_OUTPUT)[:, 1], result.get_response().model_version

    async def routing(self) -> Routing | None:
        """The routing in the loaded model's config (None: a config without one, e.g. an older model sync)."""
        response = await self.client.get_model_config(self.model_name, as_json=True, client_timeout=self.timeout_s)
        # JSON leaves out an empty string_value (no challenger).
        parameters = {k: v.get("string_value", "") for k, v in response["config"].get("parameters", {}).items()}
        return Routing.from_parameters(parameters)

    async def version_ready(self, version: str) -> bool:
        try:
            return await self.client.is_model_ready(self.model_name, version, client_timeout=self.timeout_s)
        except InferenceServerException:
            return False

    async def model_ready(self) -> bool:
        try:
            return await self.client.is_model_ready(self.model_name, client_timeout=self.timeout_s)
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self.client.close()
