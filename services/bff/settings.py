from pydantic import Field

from mlops_common.settings import FeastSettings, RabbitSettings, TritonSettings


class Settings(FeastSettings, TritonSettings, RabbitSettings):
    """Settings of the prediction BFF (backend for frontend)."""

    bff_host: str = "0.0.0.0"
    bff_port: int = 8080
    # Probability at or above which the decision is "reject".
    decision_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_batch_size: int = Field(256, ge=1)
    # Requests in flight beyond this get 503 + Retry-After instead of queueing up.
    max_in_flight: int = Field(128, ge=1)
    triton_timeout_s: float = Field(2.0, gt=0)
    online_store_timeout_s: float = Field(1.0, gt=0)
    inference_logging_enabled: bool = True
    log_buffer_size: int = Field(10_000, ge=1)
    log_spool_dir: str = "/tmp/bff-log-spool"
