"""The dashboards and alert rules of observability/: well-formed, stable, and asking only for metrics
that exist: those the services define with prometheus_client, Triton's own, RabbitMQ's plugin's and
the kubelet's (cAdvisor)."""

import ast
import re
from pathlib import Path

import pytest
from chart_tools import REPO
from observability_files import (
    CLUSTER_ONLY_EXPRESSIONS,
    DASHBOARDS,
    GPU_ONLY_EXPRESSIONS,
    alert_rules,
    dashboard_expressions,
    dashboard_panels,
    load_dashboard,
)

# Triton's metrics (its /metrics endpoint; the GPU ones appear on GPU nodes only).
TRITON_METRICS = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count",
    "nv_inference_pending_request_count", "nv_inference_queue_duration_us", "nv_inference_request_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "nv_cpu_utilization", "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes", "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
}  # fmt: skip
# RabbitMQ's rabbitmq_prometheus plugin (queue_coarse_metrics, per queue on /metrics/per-object).
RABBITMQ_METRICS = {
    "rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked", "rabbitmq_queue_messages",
    "rabbitmq_queue_consumers",
}  # fmt: skip
# The kubelet's cAdvisor, per container.
CADVISOR_METRICS = {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"}
PLATFORM_METRIC = re.compile(r"\b(?:bff|log_worker|model_sync|monitor|job_worker|nv|rabbitmq|container)_[a-z0-9_]+\b")
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
    return series | TRITON_METRICS | RABBITMQ_METRICS | CADVISOR_METRICS


def test_the_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "platform-overview",
        "bff",
        "triton",
        "log-pipeline",
        "model-quality",
        "model-rollout",
        "jobs",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_stable_and_uses_the_datasource_variable(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["uid"] == f"mlops-{path.stem}", "uids are stable: links and provisioning depend on them"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels(dashboard)
    assert panels
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_dashboard_uids_are_unique() -> None:
    uids = [load_dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_queries_ask_for_metrics_that_exist() -> None:
    exposed = exposed_series()
    expressions = [e for p in DASHBOARDS for e in dashboard_expressions(load_dashboard(p))]
    expressions += [rule["expr"] for rule in alert_rules()]
    unknown = {name for expr in expressions for name in PLATFORM_METRIC.findall(expr)} - exposed
    assert unknown == set(), "queried but exposed by no service (nor by Triton, RabbitMQ or cAdvisor)"


def test_every_service_metric_is_on_a_dashboard() -> None:
    """A metric a service exports but no panel shows is invisible to whoever runs the platform."""
    shown = {
        name
        for p in DASHBOARDS
        for expr in dashboard_expressions(load_dashboard(p))
        for name in PLATFORM_METRIC.findall(expr)
    }
    service_series = exposed_series() - TRITON_METRICS - RABBITMQ_METRICS - CADVISOR_METRICS
    # A histogram is on a panel through any of its series (quantiles use _bucket).
    families = {name.removesuffix("_bucket") for name in shown}
    defined = {name.removesuffix("_bucket") for name in service_series if not name.endswith(("_sum", "_count"))}
    assert defined - families == set()


def test_expressions_that_may_return_nothing_are_on_their_dashboards_and_say_why() -> None:
    """The allow-lists hold expressions of real panels: every GPU and cAdvisor expression and nothing
    else; a GPU panel's title says it is GPU-only."""
    panels = [panel for p in DASHBOARDS for panel in dashboard_panels(load_dashboard(p))]
    by_expression = {t["expr"]: panel for panel in panels for t in panel["targets"]}
    assert (GPU_ONLY_EXPRESSIONS | CLUSTER_ONLY_EXPRESSIONS) - by_expression.keys() == set()
    for expr in by_expression:
        assert ("nv_gpu_" in expr) == (expr in GPU_ONLY_EXPRESSIONS), expr
        assert ("container_" in expr) == (expr in CLUSTER_ONLY_EXPRESSIONS), expr
    for expr in GPU_ONLY_EXPRESSIONS:
        assert "GPU nodes only" in by_expression[expr]["title"], by_expression[expr]["title"]


def test_alert_rules_are_actionable() -> None:
    rules = alert_rules()
    assert rules
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys(), rule["alert"]


NAMESPACE_MATCHER = '{namespace=~"$namespace"'
SELECTED_METRIC = re.compile(PLATFORM_METRIC.pattern + r"|\bup\b")


def unscoped_selectors(expr: str) -> list[str]:
    """The metric selectors of `expr` that do not filter on the dashboard's namespace variable."""
    return [m.group(0) for m in SELECTED_METRIC.finditer(expr) if not expr[m.end() :].startswith(NAMESPACE_MATCHER)]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_shows_one_namespace(path: Path) -> None:
    """dev and prod may share a Prometheus: every query filters on the `namespace` variable, one value at a time."""
    dashboard = load_dashboard(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    namespace = variables["namespace"]
    assert namespace["type"] == "query"
    assert namespace["datasource"]["uid"] == "${datasource}"
    assert re.fullmatch(r"label_values\(.+, namespace\)", namespace["query"]["query"])
    assert (namespace["includeAll"], namespace["multi"]) == (False, False), "one environment at a time"
    offenders = {e: unscoped_selectors(e) for e in dashboard_expressions(dashboard)}
    assert {e: found for e, found in offenders.items() if found} == {}


def test_unscoped_selectors_are_found() -> None:
    assert unscoped_selectors('sum(rate(bff_requests_total{status="500"}[5m])) / up{namespace=~"$namespace"}') == [
        "bff_requests_total"
    ]
