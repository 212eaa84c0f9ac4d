"""The BFF's Triton client: one gRPC channel for the process, one infer call per request or batch."""

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from bff.errors import DependencyUnavailableError
from mlops_common.features import MODEL_INPUT, MODEL_OUTPUT


class TritonPredictor:
    def __init__(self, url: str, model_name: str, timeout_s: float):
        self.client = grpcclient.InferenceServerClient(url)
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._outputs = [grpcclient.InferRequestedOutput(MODEL_OUTPUT)]

    async def predict(self, features: np.ndarray) -> tuple[np.ndarray, str]:
        """Default probabilities for each row, and the model version that computed them."""
        infer_input = grpcclient.InferInput(MODEL_INPUT, list(features.shape), "FP32")
        infer_input.set_data_from_numpy(features)
        try:
            result = await self.client.infer(
                self.model_name, [infer_input], outputs=self._outputs, client_timeout=self.timeout_s
            )
        except InferenceServerException as err:
            raise DependencyUnavailableError(f"triton: {err.message()}") from err
        return result.as_numpy(MODEL_OUTPUT)[:, 1], result.get_response().model_version

    async def model_ready(self) -> bool:
        try:
            return await self.client.is_model_ready(self.model_name, client_timeout=self.timeout_s)
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self.client.close()
