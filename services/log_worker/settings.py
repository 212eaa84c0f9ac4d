from pydantic import Field

from mlops_common.settings import RabbitSettings, S3Settings


class Settings(RabbitSettings, S3Settings):
    """Settings of the worker that moves inference logs from RabbitMQ to Parquet in S3."""

    logs_bucket: str = "mlops-inference-logs"
    logs_prefix: str = "inference-logs"
    batch_max_records: int = Field(1000, ge=1)
    batch_max_age_s: float = Field(5.0, gt=0)
    prefetch_count: int = Field(2000, ge=1)
    log_worker_metrics_port: int = 9103
