"""Triton Python-backend model that serves ``model.onnx`` with ONNX Runtime.

Copied into each version folder as ``model.py`` where Triton's native onnxruntime backend is not
available. It runs inside Triton's own Python environment, so it imports nothing from the
platform: tensor names and thread counts come from the model configuration Triton passes in.
All requests of a dynamic batch go through one ONNX Runtime call, then are split back.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        threads = int(config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value", "1"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        outputs = self.session.run([self.output_name], {self.input_name: np.concatenate(batches)})[0]
        responses = []
        start = 0
        for batch in batches:
            stop = start + len(batch)
            tensor = pb_utils.Tensor(self.output_name, outputs[start:stop])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start = stop
        return responses
