"""Write and check Triton model repository entries: ``<repo>/<model>/config.pbtxt`` + ``<version>/``.

A new version is assembled and checked in a staging folder beside the repository (same
filesystem), then moved in with one rename, so Triton never sees a half-written version.
"""

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mlops_common.features import FEATURE_DTYPE, MODEL_INPUT, MODEL_OUTPUT, N_FEATURES
from mlops_common.triton_config import (
    ONNX_FILENAME,
    PYTHON_BACKEND_FILENAME,
    TritonModelSpec,
    TritonRuntime,
    render_config,
)

log = logging.getLogger(__name__)

PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")


class InvalidModelError(ValueError):
    """A downloaded model does not have the tensors the serving contract requires."""


def check_onnx(model_bytes: bytes) -> None:
    """Open the model with ONNX Runtime and run one row through it, as Triton will."""
    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad protobufs
        raise InvalidModelError(f"ONNX Runtime cannot open the model: {err}") from err
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if MODEL_INPUT not in inputs or inputs[MODEL_INPUT][-1] != N_FEATURES:
        raise InvalidModelError(f"expected input {MODEL_INPUT!r} of width {N_FEATURES}, model has {inputs}")
    if MODEL_OUTPUT not in outputs:
        raise InvalidModelError(f"expected output {MODEL_OUTPUT!r}, model has {sorted(outputs)}")
    probabilities = session.run([MODEL_OUTPUT], {MODEL_INPUT: np.zeros((1, N_FEATURES), dtype=FEATURE_DTYPE)})[0]
    if probabilities.shape != (1, 2):
        raise InvalidModelError(f"expected probabilities of shape (1, 2), got {probabilities.shape}")


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=f".{path.name}.") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


class ModelRepository:
    def __init__(self, root: Path, spec: TritonModelSpec, runtime: TritonRuntime):
        self.root = root
        self.spec = spec
        self.runtime = runtime
        self.model_dir = root / spec.name
        self.staging_root = root.parent / f".{root.name}-staging"

    def versions(self) -> list[int]:
        if not self.model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir.iterdir() if p.is_dir() and p.name.isdigit())

    def install(self, version: int, model_bytes: bytes) -> Path:
        """Check the model, stage the version folder, and move it into the repository."""
        check_onnx(model_bytes)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.staging_root.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(dir=self.staging_root, prefix=f"{self.spec.name}-{version}-"))
        (staged / ONNX_FILENAME).write_bytes(model_bytes)
        if self.runtime is TritonRuntime.PYTHON:
            shutil.copyfile(PYTHON_MODEL_SOURCE, staged / PYTHON_BACKEND_FILENAME)
        if hashlib.sha256((staged / ONNX_FILENAME).read_bytes()).digest() != hashlib.sha256(model_bytes).digest():
            raise OSError(f"{staged / ONNX_FILENAME}: written bytes differ from the downloaded model")
        target = self.model_dir / str(version)
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
        return target

    def select(self, versions: Collection[int], parameters: Mapping[str, str] | None = None) -> None:
        """Point config.pbtxt at ``versions`` (with ``parameters``); Triton reads it on the next load call
        (or start)."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        text = render_config(self.spec, self.runtime, versions=sorted(versions), parameters=parameters)
        _write_atomically(self.model_dir / "config.pbtxt", text)

    def remove_version(self, version: int) -> None:
        shutil.rmtree(self.model_dir / str(version), ignore_errors=True)

    def remove_versions_except(self, keep: Collection[int]) -> None:
        for version in self.versions():
            if version not in keep:
                self.remove_version(version)
