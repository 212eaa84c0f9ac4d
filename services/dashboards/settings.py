from pathlib import Path

from pydantic import Field, field_validator

from dashboards.grafana import parse_duration
from mlops_common.settings import REPO_ROOT, PlatformSettings


class Settings(PlatformSettings):
    """Defaults of ``python -m dashboards``; every option on its command line overrides its field."""

    prometheus_url: str = "http://127.0.0.1:9090"
    # Connect and read timeout of each query.
    prometheus_timeout_s: float = Field(10.0, gt=0)
    dashboards_dir: Path = REPO_ROOT / "observability" / "dashboards"
    dashboards_out_dir: Path = REPO_ROOT / ".stack" / "dashboards"
    # Grafana's "scrape interval" of the data source (a duration: 15s, 2s): the smallest step, and
    # $__rate_interval is max($__interval + scrape interval, 4 x scrape interval) as in Grafana (1m for 15s).
    dashboards_scrape_interval: str = "15s"

    @field_validator("dashboards_scrape_interval")
    @classmethod
    def _is_a_duration(cls, value: str) -> str:
        parse_duration(value)  # ValueError names the value
        return value
