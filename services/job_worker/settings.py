from pathlib import Path
from typing import Literal

from pydantic import Field

from mlops_common.jobs import JobsSettings
from mlops_common.settings import REPO_ROOT, RabbitSettings


class Settings(JobsSettings, RabbitSettings):
    """Settings of ``python -m job_worker`` (the database and queue: ``JOBS_DATABASE_URL``, ``JOBS_QUEUE``)."""

    # Attempts of a job before it is failed: a worker killed mid-job, or a job that found a dependency down
    # (exit code 3), is retried; a bad request (2) or a model error (4) fails at once.
    job_max_attempts: int = Field(3, ge=1)
    # Wait before a retry, times the attempt number (a dependency that is down gets time to come back).
    job_retry_delay_s: float = Field(30.0, ge=0)
    # An attempt running longer is stopped and the job failed (not retried: it would time out again).
    job_timeout_s: float = Field(6 * 3600.0, gt=0)
    # local: each attempt is a child process; kubernetes: a Job created from the chart's CronJob templates.
    job_runner: Literal["local", "kubernetes"] = "local"
    # Local runner: each job's output, <dir>/<job id>.log.
    job_log_dir: Path = REPO_ROOT / ".stack" / "logs" / "jobs"
    # Kubernetes runner: the namespace and the CronJobs whose jobTemplate each kind of job is made from.
    job_namespace: str = "default"
    job_template_score: str = "mlops-batch-scoring"
    job_template_train: str = "mlops-trainer-on-demand"
    job_worker_metrics_port: int = 9105
    # How often the queue depth and the jobs by state are read for the metrics.
    job_stats_interval_s: float = Field(15.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)
