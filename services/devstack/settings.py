"""Settings of the local stack: where each component listens, its credentials and its state.

The stack listens where the platform's own settings say the services are: SeaweedFS on the port of
``S3_ENDPOINT_URL``, MLflow on ``MLFLOW_TRACKING_URI``, Triton on ``TRITON_HTTP_URL``/``TRITON_GRPC_URL``,
so one variable moves the server and its clients together. Those addresses must be on this machine.
"""

from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr

from mlops_common.settings import REPO_ROOT, FeastSettings, MlflowSettings, RabbitSettings, TritonControlSettings


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """Host and port of a URL (``http://h:p/…``, ``amqp://u:p@h:p/v``), a bare ``h:p``, or Feast's
    Redis connection string (``h:p,db=0``)."""
    address = address.split(",", 1)[0].strip()
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


class Settings(FeastSettings, MlflowSettings, TritonControlSettings, RabbitSettings):
    """Local stack settings; every field can be set by its upper-case environment variable."""

    # Local SeaweedFS: credentials in its environment switch its authentication on.
    s3_endpoint_url: str | None = "http://127.0.0.1:8333"
    aws_access_key_id: str | None = "mlops"
    aws_secret_access_key: SecretStr | None = SecretStr("mlops-local-secret")
    # Same variable names as the services that use these buckets.
    logs_bucket: str = "mlops-inference-logs"
    mlflow_bucket: str = "mlops-mlflow"
    mlflow_artifacts_prefix: str = "artifacts"
    # Where the README's scoring jobs write (any bucket the job can reach will do).
    scores_bucket: str = "mlops-scores"

    stack_dir: Path = REPO_ROOT / ".stack"
    # Shared with model_sync (MODEL_REPOSITORY): the directory Triton serves.
    model_repository: Path = REPO_ROOT / ".stack" / "model_repository"
    triton_venv: Path = REPO_ROOT / ".venv-triton"
    triton_metrics_port: int = 8002
    # Local Prometheus (same variable as `python -m dashboards` reads) and how often it scrapes.
    prometheus_url: str = "http://127.0.0.1:9090"
    prometheus_scrape_interval_s: float = Field(default=5.0, gt=0)
    # RabbitMQ's rabbitmq_prometheus plugin (its default port).
    rabbitmq_prometheus_port: int = 15692
    # The platform's own listeners (same variables as their services read): checked before `up`.
    bff_port: int = 8080
    bff_metrics_port: int = 9101
    model_sync_metrics_port: int = 9102
    log_worker_metrics_port: int = 9103
    monitor_metrics_port: int = 9104
    job_worker_metrics_port: int = 9105
    # The monitor's window here (the chart's default is an hour) and its retraining: a local process.
    monitor_window_s: float = Field(default=300.0, ge=10)

    # SeaweedFS's internal servers (master, volume, filer, admin and their gRPC ports) take the 9
    # ports from here on; only the S3 port is for clients. Below the ephemeral range (32768+), so a
    # test's free port never lands there.
    seaweedfs_internal_base_port: int = Field(default=17330, ge=1024, le=32000)

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    # A superuser reachable with trust auth: creates MLflow's role and database.
    postgres_admin_user: str = "postgres"
    postgres_admin_database: str = "postgres"
    mlflow_db_user: str = "mlflow"
    mlflow_db_password: SecretStr | None = None

    # Names of the stack's state in the machine's shared PostgreSQL, Redis and RabbitMQ. Left unset,
    # each is derived from the stack's id when the stack is first started, and recorded with it in
    # <stack_dir>/stack.json (devstack.instance): a new stack directory means a new, empty platform.
    mlflow_db_name: str | None = None
    feast_project: str | None = None
    rabbitmq_vhost: str | None = None
    jobs_db_name: str | None = None

    # uvicorn workers: one is plenty locally and each costs a few hundred MB.
    mlflow_workers: int = Field(default=1, ge=1)
    # Extra Host headers MLflow accepts (localhost and private IPs always pass), comma-separated.
    mlflow_allowed_hosts: str | None = None

    startup_timeout_s: float = Field(default=120.0, gt=0)
    # When a system service's binary is missing and we run as root: apt-get install it.
    install_missing: bool = True

    # -- derived ----------------------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.stack_dir / "run"

    @property
    def seaweedfs_dir(self) -> Path:
        return self.stack_dir / "seaweedfs"

    @property
    def triton_home(self) -> Path:
        return self.stack_dir / "triton" / "home"

    @property
    def s3_host_port(self) -> tuple[str, int]:
        return host_port(self.s3_endpoint_url or "", 8333)

    @property
    def mlflow_host_port(self) -> tuple[str, int]:
        return host_port(self.mlflow_tracking_uri, 5000)

    @property
    def triton_http_host_port(self) -> tuple[str, int]:
        return host_port(self.triton_http_url, 8000)

    @property
    def triton_grpc_host_port(self) -> tuple[str, int]:
        return host_port(self.triton_grpc_url, 8001)

    @property
    def prometheus_host_port(self) -> tuple[str, int]:
        return host_port(self.prometheus_url, 9090)

    @property
    def metrics_addresses(self) -> dict[str, str]:
        """``host:port`` of every process's metrics, by its container name in the chart (the
        platform's processes run on this machine)."""
        return {
            "bff": f"127.0.0.1:{self.bff_metrics_port}",
            "triton": f"{self.triton_http_host_port[0]}:{self.triton_metrics_port}",
            "model-sync": f"127.0.0.1:{self.model_sync_metrics_port}",
            "log-worker": f"127.0.0.1:{self.log_worker_metrics_port}",
            "monitor": f"127.0.0.1:{self.monitor_metrics_port}",
            "job-worker": f"127.0.0.1:{self.job_worker_metrics_port}",
            "rabbitmq": f"{self.rabbitmq_host_port[0]}:{self.rabbitmq_prometheus_port}",
        }

    @property
    def redis_host_port(self) -> tuple[str, int]:
        return host_port(self.feast_redis_connection, 6379)

    @property
    def rabbitmq_host_port(self) -> tuple[str, int]:
        return host_port(self.rabbitmq_url.get_secret_value(), 5672)

    @property
    def buckets(self) -> list[str]:
        return [self.raw_bucket, self.offline_bucket, self.mlflow_bucket, self.logs_bucket, self.scores_bucket]

    @property
    def secret_key(self) -> str:
        return self.aws_secret_access_key.get_secret_value() if self.aws_secret_access_key else ""

    def _named(self, field: str) -> str:
        value = getattr(self, field)
        if value is None:
            raise ValueError(f"{field} is unset: bind the settings to a stack first (StackInstance.bind)")
        return value

    @property
    def mlflow_backend_store_uri(self) -> str:
        # psycopg2 explicitly: with SQLAlchemy 2.1 a bare postgresql:// means psycopg 3 (not installed).
        return self._postgres_url("postgresql+psycopg2", "mlflow_db_name")

    @property
    def jobs_database_url(self) -> str:
        """The jobs' database (the jobs API and worker, libpq's URL), owned by the same role as MLflow's."""
        return self._postgres_url("postgresql", "jobs_db_name")

    def _postgres_url(self, scheme: str, database_field: str) -> str:
        password = f":{quote(self.mlflow_db_password.get_secret_value())}" if self.mlflow_db_password else ""
        return (
            f"{scheme}://{self.mlflow_db_user}{password}@"
            f"{self.postgres_host}:{self.postgres_port}/{quote(self._named(database_field))}"
        )

    @property
    def rabbitmq_user(self) -> str:
        return unquote(urlsplit(self.rabbitmq_url.get_secret_value()).username or "guest")

    @property
    def platform_rabbitmq_url(self) -> str:
        """``RABBITMQ_URL`` (server and credentials) with the stack's own vhost as its path."""
        parts = urlsplit(self.rabbitmq_url.get_secret_value())
        return urlunsplit(parts._replace(path="/" + quote(self._named("rabbitmq_vhost"), safe="")))

    @property
    def log_spool_dir(self) -> Path:
        return self.stack_dir / "bff-log-spool"

    @property
    def mlflow_artifacts_destination(self) -> str:
        return f"s3://{self.mlflow_bucket}/{self.mlflow_artifacts_prefix}"

    def platform_env(self) -> dict[str, str]:
        """Environment for the platform's processes (BFF, model sync, log worker, trainer) run
        against this stack; names match the fields in ``mlops_common.settings`` and the services."""
        return {
            "S3_ENDPOINT_URL": self.s3_endpoint_url or "",
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id or "",
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.aws_default_region,
            "RAW_BUCKET": self.raw_bucket,
            "OFFLINE_BUCKET": self.offline_bucket,
            "LOGS_BUCKET": self.logs_bucket,
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "FEAST_PROJECT": self._named("feast_project"),
            "FEAST_REGISTRY_PATH": self.feast_registry_path,
            "FEAST_REDIS_CONNECTION": self.feast_redis_connection,
            "FEAST_S3_ENDPOINT_URL": self.s3_endpoint_url or "",
            "TRITON_GRPC_URL": self.triton_grpc_url,
            "TRITON_HTTP_URL": self.triton_http_url,
            "RABBITMQ_URL": self.platform_rabbitmq_url,
            "JOBS_DATABASE_URL": self.jobs_database_url,
            "JOB_LOG_DIR": str(self.logs_dir / "jobs"),
            "LOG_SPOOL_DIR": str(self.log_spool_dir),
            "MODEL_REPOSITORY": str(self.model_repository),
            "PROMETHEUS_URL": self.prometheus_url,
            "DASHBOARDS_SCRAPE_INTERVAL": f"{self.prometheus_scrape_interval_s:g}s",
            # No NGC image here: Triton serves the ONNX model through its Python backend.
            "TRITON_RUNTIME": "python",
            "MONITOR_WINDOW_S": f"{self.monitor_window_s:g}",
            "RETRAIN_MODE": "local",
            # Rollouts judged on the demo's traffic within minutes (the chart's defaults wait longer).
            "ROLLOUT_SCRAPE_INTERVAL_S": f"{self.prometheus_scrape_interval_s:g}",
            "ROLLOUT_ANALYSIS_INTERVAL_S": "10",
            "ROLLOUT_MIN_CALLS": "200",
            "ROLLOUT_MIN_DURATION_S": "60",
        }
