from pathlib import Path
from typing import Literal

from pydantic import Field

from mlops_common.rollout import RolloutSettings
from mlops_common.settings import REPO_ROOT, MlflowSettings, TritonControlSettings
from mlops_common.triton_config import TritonRuntime


class Settings(MlflowSettings, TritonControlSettings, RolloutSettings):
    """Settings of the model sync loop that keeps Triton on the current champion (and challenger)."""

    model_repository: Path = REPO_ROOT / ".stack" / "model_repository"
    champion_alias: str = "champion"
    triton_runtime: TritonRuntime = TritonRuntime.ONNXRUNTIME
    # KIND_GPU on GPU nodes (the chart sets it from triton.gpu.enabled).
    triton_instance_kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"
    sync_interval_s: float = Field(15.0, gt=0)
    # How long a version the routing no longer names stays loaded: longer than the BFFs take to
    # re-read the routing (BFF ROUTING_REFRESH_S), so none of them calls a version that is gone.
    routing_grace_s: float = Field(10.0, ge=0)
    triton_load_timeout_s: float = Field(120.0, gt=0)
    # How long `--once` (the init container) waits for a first champion before failing the pod.
    champion_wait_timeout_s: float = Field(1800.0, ge=0)
    model_sync_metrics_port: int = 9102
