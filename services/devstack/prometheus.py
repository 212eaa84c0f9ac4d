"""Prometheus for the local stack and the tests, scraping the platform as the Operator would.

The scrape config is generated from ``observability/scrape-targets.yaml`` (the list the chart's
ServiceMonitors are checked against) and gives every target the labels the Prometheus Operator gives a
ServiceMonitor's targets: ``job`` and ``service`` = the Service name, ``namespace``, ``pod``,
``container`` and ``endpoint`` = the port name. The repository's alert rule files load as they are.
Binaries: Debian's Prometheus 2.42, unpacked into ``.tools/prometheus`` by tools/install-prometheus.sh.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from devstack.processes import Daemon
from mlops_common.settings import REPO_ROOT

LOCALHOST = "127.0.0.1"
INSTALL_SCRIPT = REPO_ROOT / "tools" / "install-prometheus.sh"
PROMETHEUS_BIN = REPO_ROOT / ".tools" / "prometheus" / "usr" / "bin" / "prometheus"
SCRAPE_TARGETS_FILE = REPO_ROOT / "observability" / "scrape-targets.yaml"
ALERTS_DIR = REPO_ROOT / "observability" / "alerts"
# What a default install of the chart is called: Services are `<release>-<component>`.
RELEASE = "mlops"
NAMESPACE = "mlops"


class PrometheusSetupError(RuntimeError):
    pass


@dataclass(frozen=True)
class ScrapeTarget:
    service: str
    port: str
    container: str
    path: str

    @property
    def service_name(self) -> str:
        return f"{RELEASE}-{self.service}"


def scrape_targets(path: Path = SCRAPE_TARGETS_FILE) -> list[ScrapeTarget]:
    return [ScrapeTarget(**entry) for entry in yaml.safe_load(path.read_text())["targets"]]


def scrape_config(addresses: Mapping[str, str], *, interval_s: float) -> dict:
    """Prometheus' configuration for the platform at ``addresses`` (container -> ``host:port``);
    every target of scrape-targets.yaml needs one."""
    targets = scrape_targets()
    missing = [t.container for t in targets if t.container not in addresses]
    if missing:
        raise PrometheusSetupError(f"no local address for {missing} (observability/scrape-targets.yaml)")
    jobs = []
    for target in targets:
        labels = {
            "job": target.service_name,
            "namespace": NAMESPACE,
            "service": target.service_name,
            "pod": f"{target.service_name}-local",
            "container": target.container,
            "endpoint": target.port,
        }
        jobs.append(
            {
                # Named as the Operator names a ServiceMonitor endpoint's job (the `job` label is relabelled).
                "job_name": f"serviceMonitor/{NAMESPACE}/{RELEASE}-{target.container}/0",
                "metrics_path": target.path,
                "static_configs": [{"targets": [addresses[target.container]]}],
                # Relabelling, not static labels: `job` is set from job_name before static labels count.
                "relabel_configs": [
                    {"target_label": name, "replacement": value} for name, value in sorted(labels.items())
                ],
            }
        )
    return {
        "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
        "rule_files": [str(path) for path in sorted(ALERTS_DIR.glob("*.yaml"))],
        "scrape_configs": jobs,
    }


def ensure_prometheus_binary() -> Path:
    """The prometheus binary, installed by tools/install-prometheus.sh when absent."""
    if not PROMETHEUS_BIN.exists():
        result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False)
        if result.returncode != 0 or not PROMETHEUS_BIN.exists():
            output = (result.stdout + result.stderr).strip()[-2000:]
            raise PrometheusSetupError(f"{INSTALL_SCRIPT} failed (exit {result.returncode}):\n{output}")
    return PROMETHEUS_BIN


def write_config(config_path: Path, addresses: Mapping[str, str], *, interval_s: float) -> bool:
    """Write the scrape config; True if it changed (a running Prometheus must then restart)."""
    text = yaml.safe_dump(scrape_config(addresses, interval_s=interval_s), sort_keys=False)
    if config_path.exists() and config_path.read_text() == text:
        return False
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(text)
    return True


def prometheus_daemon(
    config_path: Path,
    data_dir: Path,
    port: int,
    log_path: Path,
    *,
    state_dir: Path | None = None,
    die_with_parent: bool = False,
) -> Daemon:
    return Daemon(
        name="prometheus",
        argv=[
            str(PROMETHEUS_BIN),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address={LOCALHOST}:{port}",
            "--storage.tsdb.retention.time=7d",
        ],
        log_path=log_path,
        health=f"http://{LOCALHOST}:{port}/-/ready",
        cwd=data_dir.parent,
        state_dir=state_dir,
        address=f"http://{LOCALHOST}:{port}",
        die_with_parent=die_with_parent,
        before_start=lambda: (ensure_prometheus_binary(), data_dir.mkdir(parents=True, exist_ok=True)),
    )
