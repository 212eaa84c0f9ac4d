from pydantic import Field

from mlops_common.ground_truth import GroundTruthStoreSettings
from mlops_common.settings import FeastSettings, RabbitSettings, TritonSettings


class Settings(FeastSettings, TritonSettings, RabbitSettings, GroundTruthStoreSettings):
    """Settings of the prediction BFF (backend for frontend); the S3 fields and LOGS_BUCKET /
    GROUND_TRUTH_PREFIX locate the ground-truth table that ``POST /labels`` writes."""

    bff_host: str = "0.0.0.0"
    bff_port: int = 8080
    # Shutdown after SIGTERM: uvicorn waits up to bff_graceful_shutdown_s for requests in flight, then
    # the inference-log publisher has log_drain_timeout_s to flush its buffer and drain the spool to
    # RabbitMQ. A pod's terminationGracePeriodSeconds must cover both (the chart adds them up).
    bff_graceful_shutdown_s: int = Field(10, ge=1)
    # Probability at or above which the decision is "reject".
    decision_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_batch_size: int = Field(256, ge=1)
    # Request bodies over this are refused with 413 before they are parsed (a 256-row batch is ~150 KB,
    # 10,000 labels ~800 KB).
    max_body_bytes: int = Field(2 << 20, ge=1024)
    # Requests in flight beyond this get 503 + Retry-After instead of queueing up.
    max_in_flight: int = Field(128, ge=1)
    triton_timeout_s: float = Field(2.0, gt=0)
    online_store_timeout_s: float = Field(1.0, gt=0)
    # POST /labels: each S3 request of the ground-truth write (it retries up to three times).
    labels_write_timeout_s: float = Field(5.0, gt=0)
    inference_logging_enabled: bool = True
    log_buffer_size: int = Field(10_000, ge=1)
    log_spool_dir: str = "/tmp/bff-log-spool"
    # Inference-log publishing (bff.inference_log): records per AMQP message (JSON lines), messages
    # awaiting confirms at once, and how long to wait for a fuller message before publishing (fewer,
    # fuller messages cost less CPU per record; benchmarks/inference_logging measures the total cost).
    log_message_max_records: int = Field(100, ge=1)
    log_publish_max_in_flight: int = Field(20, ge=1)
    log_publish_linger_s: float = Field(0.05, ge=0)
    # A confirm slower than this counts as a broker outage: the records go to the spool.
    log_publish_timeout_s: float = Field(5.0, gt=0)
    log_connect_timeout_s: float = Field(5.0, gt=0)
    # Reconnect backoff doubles from 0.1 s up to this.
    log_reconnect_max_s: float = Field(5.0, gt=0)
    log_spool_segment_bytes: int = Field(16 << 20, ge=1024)
    # The spool's segment files never exceed this; records that do not fit are dropped and counted
    # (outcome "dropped_spool_full"). Per process: each uvicorn worker has a spool slot of its own.
    log_spool_max_bytes: int = Field(512 << 20, gt=0)
    log_drain_timeout_s: float = Field(20.0, gt=0)
