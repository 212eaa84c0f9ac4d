"""Settings shared by several services. Each service composes the blocks it needs into its own
``Settings`` class; these classes are the only place the platform reads environment variables.

Field names map to upper-case environment variables (``s3_endpoint_url`` <- ``S3_ENDPOINT_URL``).
"""

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops_common.logging import LogFormat

REPO_ROOT = Path(__file__).resolve().parents[2]


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    log_level: str = "INFO"
    # "json" in a cluster (one object per line for the log collector), "text" on a terminal.
    log_format: LogFormat = "text"


class S3Settings(PlatformSettings):
    """Object storage: SeaweedFS locally, MinIO or AWS S3 in the cluster."""

    # Leave unset for AWS S3; set to the gateway's URL for SeaweedFS/MinIO.
    s3_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_default_region: str = "us-east-1"


class DataSettings(S3Settings):
    """Where raw tables and the offline feature store live."""

    raw_bucket: str = "mlops-raw"
    raw_prefix: str = "home-credit"
    offline_bucket: str = "mlops-offline"
    offline_prefix: str = "features"


class FeastSettings(DataSettings):
    """Values substituted into the ``${...}`` placeholders of the environment's feature_store.yaml."""

    feast_repo_path: Path = REPO_ROOT / "feature_repo"
    # Which feature_store.yaml to use (one per environment); relative paths are under feast_repo_path.
    feast_config_file: Path = Path("feature_store.yaml")
    feast_project: str = "credit_default"
    # A local path, s3://bucket/key (needs feast_s3_endpoint_url off AWS) or a SQL URL.
    feast_registry_path: str = str(REPO_ROOT / ".stack" / "feast" / "registry.db")
    feast_redis_connection: str = "127.0.0.1:6379,db=0"
    feast_sqlite_path: str = str(REPO_ROOT / ".stack" / "feast" / "online.db")
    # Read by Feast itself for an S3 registry on a non-AWS endpoint.
    feast_s3_endpoint_url: str | None = None


class MlflowSettings(PlatformSettings):
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    registered_model_name: str = "credit-default"
    # MLflow's client reads these two itself; the defaults keep a down server from stalling a loop for minutes.
    mlflow_http_request_timeout: int = 10
    mlflow_http_request_max_retries: int = 2

    def export_mlflow_client_env(self) -> None:
        """Hand the client limits to MLflow, which only reads them from the process environment."""
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.mlflow_http_request_timeout)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.mlflow_http_request_max_retries)
        # Progress bars are for terminals; in a service log they are noise.
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


def triton_model_name_for(registered_model_name: str) -> str:
    """The one naming rule between the registry and serving: MLflow's ``credit-default`` is served by
    Triton, and answered by the prediction API, as ``credit_default``."""
    return registered_model_name.replace("-", "_")


def host_ports(target: str) -> list[tuple[str, int]]:
    """``host:port`` or several, comma-separated (``[v6]:port`` too) -> [(host, port), ...]."""
    addresses = []
    for part in filter(None, (p.strip() for p in target.split(","))):
        host, separator, port = part.rpartition(":")
        if not separator or not port.isdigit() or not host or "/" in host:  # "/": a URL or a gRPC target
            raise ValueError(f"an address is host:port, not {part!r}")
        addresses.append((host.strip("[]"), int(port)))
    if not addresses:
        raise ValueError(f"no host:port in {target!r}")
    return addresses


class TritonSettings(PlatformSettings):
    # Triton's HTTP API (host:port, or several comma-separated): inference, readiness, the model's config.
    triton_http_url: str = "127.0.0.1:8000"
    triton_model_name: str = triton_model_name_for(MlflowSettings.model_fields["registered_model_name"].default)

    @field_validator("triton_http_url")
    @classmethod
    def _addresses(cls, value: str) -> str:
        host_ports(value)
        return value


class TritonControlSettings(TritonSettings):
    # Model sync loads and unloads models through tritonclient's gRPC repository API.
    triton_grpc_url: str = "127.0.0.1:8001"


class DecisionSettings(PlatformSettings):
    # Probability at or above which the decision is "reject": the API's and the batch-scoring job's.
    decision_threshold: float = Field(0.5, ge=0.0, le=1.0)


class RabbitSettings(PlatformSettings):
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    inference_log_exchange: str = "inference-logs"
    inference_log_queue: str = "inference-logs"
