from pydantic import Field

from mlops_common.inference_log import InferenceLogStoreSettings
from mlops_common.settings import RabbitSettings


class Settings(RabbitSettings, InferenceLogStoreSettings):
    """Settings of the worker that moves inference logs from RabbitMQ to Parquet in S3
    (the bucket and prefix, ``LOGS_BUCKET``/``LOGS_PREFIX``, come from InferenceLogStoreSettings)."""

    batch_max_records: int = Field(1000, ge=1)
    batch_max_age_s: float = Field(5.0, gt=0)
    # Unacknowledged messages held at once; must cover a full batch (a message holds >= 1 record).
    prefetch_count: int = Field(2000, ge=1)
    log_worker_metrics_port: int = 9103
    # Connect and read timeout of each S3 call (botocore retries a failed call up to 3 times).
    s3_timeout_s: float = Field(10.0, gt=0)
    # Backoff caps: between S3 probes after a failed write, and between RabbitMQ reconnects.
    s3_retry_max_s: float = Field(10.0, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    # On SIGTERM: how long to keep writing what the worker holds before it exits (the rest is requeued).
    shutdown_timeout_s: float = Field(30.0, gt=0)
