"""The dashboards and alert rules of observability/: well-formed, stable, and asking only for metrics
that exist: those the services define with prometheus_client, and Triton's own."""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from chart_tools import REPO

OBSERVABILITY = REPO / "observability"
DASHBOARDS = sorted((OBSERVABILITY / "dashboards").glob("*.json"))
ALERT_FILES = sorted((OBSERVABILITY / "alerts").glob("*.yaml"))
# Triton's metrics (its /metrics endpoint; the GPU ones appear on GPU nodes only).
TRITON_METRICS = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count",
    "nv_inference_pending_request_count", "nv_inference_queue_duration_us", "nv_inference_request_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "nv_cpu_utilization", "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes", "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
}  # fmt: skip
PLATFORM_METRIC = re.compile(r"\b(?:bff|log_worker|model_sync|nv)_[a-z0-9_]+\b")
SERIES_SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count"),
                   "Summary": ("_sum", "_count", "")}  # fmt: skip


def exposed_series() -> set[str]:
    """Series names the services expose: every prometheus_client metric they define, with its suffixes."""
    series = set()
    for path in (REPO / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            kind = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if kind in SERIES_SUFFIXES and isinstance(node.args[0].value, str):
                series |= {node.args[0].value + suffix for suffix in SERIES_SUFFIXES[kind]}
    return series | TRITON_METRICS


def dashboard_expressions(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    return [
        rule for path in ALERT_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def test_the_four_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} == {"platform-overview", "bff", "triton", "log-pipeline"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_stable_and_uses_the_datasource_variable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == f"mlops-{path.stem}", "uids are stable: links and provisioning depend on them"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_queries_ask_for_metrics_that_exist() -> None:
    exposed = exposed_series()
    expressions = [e for p in DASHBOARDS for e in dashboard_expressions(json.loads(p.read_text()))]
    expressions += [rule["expr"] for rule in alert_rules()]
    unknown = {name for expr in expressions for name in PLATFORM_METRIC.findall(expr)} - exposed
    assert unknown == set(), "queried but exposed by no service (or by Triton)"


def test_alert_rules_are_actionable() -> None:
    rules = alert_rules()
    assert rules
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
