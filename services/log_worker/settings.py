from pydantic import Field

from mlops_common.ground_truth import GroundTruthStoreSettings
from mlops_common.settings import RabbitSettings


class Settings(RabbitSettings, GroundTruthStoreSettings):
    """Settings of the worker that moves inference logs from RabbitMQ into the Delta table in S3
    (the bucket and prefix, ``LOGS_BUCKET``/``LOGS_PREFIX``, come from InferenceLogStoreSettings), and
    of ``python -m log_worker.maintenance``, which also looks after the ground-truth table."""

    # A batch is written once it holds batch_max_records records (or its oldest is batch_max_age_s old).
    # What waits beyond that (a backlog: the load outruns the writes) goes into the same write, up to
    # batch_backlog_max_records. A write's cost is mostly per commit (benchmarks/results/
    # inference_log_table.md, by the size of a write), so a worker that falls behind catches up instead of
    # falling further behind, and a full batch of 50,000 costs about 0.6 of the CPU per row of 20,000 (the
    # default before; 5,000 before that), 100,000 about 0.55: under loads of batches the worker's MERGE is
    # the largest cost of logging, on cores the API may share. Below 10,000 records/s the age decides.
    batch_max_records: int = Field(50_000, ge=1)
    batch_backlog_max_records: int = Field(100_000, ge=1)
    batch_max_age_s: float = Field(5.0, gt=0)
    # Memory bound: at most this many message bytes are held unacknowledged (their parsed rows take
    # about as much again). The prefetch window is this over MAX_MESSAGE_BYTES; a larger message goes
    # to the dead-letter queue. The BFF's messages hold up to LOG_MESSAGE_MAX_RECORDS (2,000) records of
    # at most ~1.3 KB.
    max_held_bytes: int = Field(256 << 20, ge=1 << 20)
    max_message_bytes: int = Field(4 << 20, ge=64 << 10)
    log_worker_metrics_port: int = 9103
    # Connect and read timeout of each S3 call (botocore retries a failed call up to 3 times).
    s3_timeout_s: float = Field(10.0, gt=0)
    # Backoff caps: between S3 probes after a failed write, and between RabbitMQ reconnects.
    s3_retry_max_s: float = Field(10.0, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    # On SIGTERM: how long to keep writing what the worker holds before it exits (the rest is requeued).
    shutdown_timeout_s: float = Field(30.0, gt=0)
    # Maintenance: data files no longer in the table are deleted once they are this old (the window
    # in which older table versions can still be read, and in which a concurrent write is safe).
    table_retention_days: float = Field(7.0, ge=0)

    @property
    def prefetch_count(self) -> int:
        """Unacknowledged messages held at once."""
        return max(1, self.max_held_bytes // self.max_message_bytes)
