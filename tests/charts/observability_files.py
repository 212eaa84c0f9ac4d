"""The dashboards and alert rules of observability/, and promtool, for the tests that check them
(tests/charts/test_observability.py, tests/observability/, and whatever evaluates them on a live Prometheus)."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_tools import REPO, TOOLS, run

OBSERVABILITY = REPO / "observability"
DASHBOARDS = sorted((OBSERVABILITY / "dashboards").glob("*.json"))
ALERT_FILES = sorted((OBSERVABILITY / "alerts").glob("*.yaml"))
RUNBOOKS = OBSERVABILITY / "runbooks.md"
PROMETHEUS_BIN = TOOLS / "prometheus" / "usr" / "bin"
PROMETHEUS_INSTALLER = REPO / "tools" / "install-prometheus.sh"

# Labels Prometheus or the Prometheus Operator put on every scraped series (`endpoint` is the port name):
# a metric's own label of that name is overwritten, kept only as `exported_<name>`.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint", "container"})

# Dashboard expressions allowed to return nothing on this machine, each for a stated reason; every
# other expression of every panel returns data once the platform has served traffic.
# Triton exports nv_gpu_* only where it sees a GPU.
GPU_ONLY_EXPRESSIONS = frozenset({
    'avg by (pod, gpu_uuid) (nv_gpu_utilization{namespace=~"$namespace"})',
    'sum by (pod) (nv_gpu_memory_used_bytes{namespace=~"$namespace"})',
})  # fmt: skip
# Per-pod CPU comes from the kubelet's cAdvisor, which exists in a cluster only.
CLUSTER_ONLY_EXPRESSIONS = frozenset({
    'sum by (pod) (rate(container_cpu_usage_seconds_total{namespace=~"$namespace", container="bff"}[5m]))',
    'sum by (pod, container) '
    '(rate(container_cpu_usage_seconds_total{namespace=~"$namespace", container=~"triton|model-sync"}[5m]))',
    'sum by (pod) (rate(container_cpu_usage_seconds_total{namespace=~"$namespace", container="log-worker"}[5m]))',
})  # fmt: skip


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with queries, including those nested in (collapsed) rows."""
    panels = []
    for panel in dashboard["panels"]:
        panels += dashboard_panels(panel) if panel.get("panels") else []
        if panel["type"] != "row":
            panels.append(panel)
    return panels


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard_panels(dashboard) for target in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for path in ALERT_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def prometheus_tool(name: str = "promtool") -> Path:
    """`promtool` or `prometheus` from .tools/prometheus, installed by tools/install-prometheus.sh if absent."""
    path = PROMETHEUS_BIN / name
    if not path.exists():
        result = run([PROMETHEUS_INSTALLER])
        if result.returncode or not path.exists():
            pytest.fail(
                f"{name} is missing ({path}) and {PROMETHEUS_INSTALLER} failed:\n{result.stdout}{result.stderr}"
            )
    return path
