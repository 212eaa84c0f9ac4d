"""The alert rules of observability/alerts: valid for Prometheus 2.42's promtool, each one shown firing
on synthetic series (alerts-test.yaml) and silent on a healthy platform, each linked to its runbook
section, and none comparing a quantile with a value its histogram cannot reach."""

import re
from pathlib import Path

import pytest
import yaml
from chart_tools import REPO, run
from observability_files import ALERT_FILES, RUNBOOKS, alert_rules, prometheus_tool

UNIT_TESTS = Path(__file__).with_name("alerts-test.yaml")
HEALTHY_GROUP = "a healthy platform raises no alert"


def promtool_test(unit_tests: Path) -> tuple[int, str]:
    result = run([prometheus_tool(), "test", "rules", unit_tests])
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("path", ALERT_FILES, ids=lambda p: p.name)
def test_rule_file_passes_promtool_check(path: Path) -> None:
    result = run([prometheus_tool(), "check", "rules", path])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    returncode, output = promtool_test(UNIT_TESTS)
    assert returncode == 0, output


def test_unit_tests_show_every_alert_firing_and_silent_when_healthy() -> None:
    spec = yaml.safe_load(UNIT_TESTS.read_text())
    assert sorted(Path(UNIT_TESTS.parent, f).resolve() for f in spec["rule_files"]) == ALERT_FILES
    names = {rule["alert"] for rule in alert_rules()}
    fired = {case["alertname"] for group in spec["tests"] for case in group["alert_rule_test"] if case["exp_alerts"]}
    assert names - fired == set(), "alerts no unit test shows firing"
    healthy = next(group for group in spec["tests"] if group["name"] == HEALTHY_GROUP)
    silent = {case["alertname"] for case in healthy["alert_rule_test"] if case["exp_alerts"] == []}
    assert names - silent == set(), "alerts not checked silent on a healthy platform"


# Rules as the issue found them: (alert, text in the rules, its broken form). Each must fail its unit test.
BROKEN_RULES = {
    "p99 compared with the highest finite bucket (never true)": ("MlopsLogWorkerSlowWrites", "> 10\n", "> 30\n"),
    "stalled worker as `== 0` (silent once the worker is gone)": (
        "MlopsLogWorkerStalled",
        "unless on (namespace) (sum by (namespace) (rate(log_worker_messages_consumed_total[10m])) > 0)",
        "and on (namespace) (sum by (namespace) (rate(log_worker_messages_consumed_total[10m])) == 0)",
    ),
    # dev and prod in one cluster: versions compared across namespaces diverge whenever dev runs ahead.
    "served versions compared across namespaces": (
        "MlopsModelVersionsDiverge",
        'count by (namespace) (count_values by (namespace) ("version", model_sync_served_version))',
        'count(count by (version) (count_values("version", model_sync_served_version)))',
    ),
    "error ratio over all namespaces (a failing prod drowned by dev's traffic)": (
        "MlopsBffHighErrorRatio",
        'sum by (namespace) (rate(bff_requests_total{status=~"5.."}[5m]))\n'
        "            / clamp_min(sum by (namespace) (rate(bff_requests_total[5m])), 1e-9)",
        'sum(rate(bff_requests_total{status=~"5.."}[5m]))\n'
        "            / clamp_min(sum(rate(bff_requests_total[5m])), 1e-9)",
    ),
    "latency filtered on the label the Operator overwrites": (
        "MlopsBffHighLatency",
        'route="/predict"',
        'endpoint="/predict"',
    ),
    "vanished targets not detected": (
        "MlopsServingTargetMissing",
        'unless on (namespace) up{job=~".+-log-worker"}',
        'unless on (namespace) up{job=~".+-log-worker|.+-bff"}',
    ),
    "a component missing in one namespace hidden by another namespace's": (
        "MlopsServingTargetMissing",
        'unless on (namespace) up{job=~".+-triton"}',
        'unless up{job=~".+-triton"}',
    ),
    "spool-full drops looked for among disk failures": (
        "MlopsInferenceLogSpoolFull",
        'outcome="dropped_spool_full"',
        'outcome="dropped"',
    ),
    # The settings gauges have no model/version label: a plain comparison matches no series.
    "live AUC compared with the floor on all labels (never matches)": (
        "MlopsLiveAucBelowFloor",
        "monitor_live_roc_auc < ignoring(model, version) group_left monitor_live_auc_floor",
        "monitor_live_roc_auc < monitor_live_auc_floor",
    ),
    "score drift not looked at": (
        "MlopsModelDriftHigh",
        "\n            or max by (namespace, model, version) (monitor_score_drifted) == 1",
        "",
    ),
    "vanished monitor not detected": (
        "MlopsMonitorStale",
        " or absent(monitor_last_success_timestamp_seconds)",
        "",
    ),
}


@pytest.mark.parametrize("breakage", BROKEN_RULES)
def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path, breakage: str) -> None:
    """The unit tests have teeth: each rule mistake the issue found makes `promtool test rules` fail."""
    alert, old, new = BROKEN_RULES[breakage]
    rules = tmp_path / "rules"
    rules.mkdir()
    changed = 0
    for path in ALERT_FILES:
        text = path.read_text()
        changed += text.count(old)
        (rules / path.name).write_text(text.replace(old, new))
    assert changed == 1, f"{old!r} should occur exactly once in the rules"
    spec = yaml.safe_load(UNIT_TESTS.read_text())
    spec["rule_files"] = [str(rules / path.name) for path in ALERT_FILES]
    broken_tests = tmp_path / "alerts-test.yaml"
    broken_tests.write_text(yaml.safe_dump(spec, sort_keys=False))
    returncode, output = promtool_test(broken_tests)
    assert returncode != 0, output
    assert f"alertname: {alert}," in output, output


def _anchor(heading: str) -> str:
    """The anchor GitHub and GitLab give a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_its_runbook_section() -> None:
    headings = [line[3:] for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")]
    anchors = {_anchor(h) for h in headings}
    names = [rule["alert"] for rule in alert_rules()]
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == RUNBOOKS.relative_to(REPO).as_posix(), url
        assert anchor == _anchor(rule["alert"]), url
        assert anchor in anchors, f"{rule['alert']}: no runbook section for {url}"
    assert sorted(headings) == sorted(names), "one runbook section per alert, no stale ones"


def _highest_finite_buckets() -> dict[str, float]:
    """Histogram series name (`…_bucket`) -> its highest finite `le`, from the services' registries."""
    # Through bff.inference_log, whose metrics share the BFF's registry.
    from bff.inference_log import REGISTRY as BFF
    from log_worker.worker import REGISTRY as LOG_WORKER
    from model_sync.sync import REGISTRY as MODEL_SYNC

    highest: dict[str, float] = {}
    for registry in (BFF, LOG_WORKER, MODEL_SYNC):
        for family in registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                    highest[sample.name] = max(highest.get(sample.name, 0.0), float(sample.labels["le"]))
    return highest


def test_quantile_thresholds_lie_below_the_highest_finite_bucket() -> None:
    """histogram_quantile() never exceeds the highest finite bucket: `> that bound` would never fire."""
    highest = _highest_finite_buckets()
    quantile_alert = re.compile(r"histogram_quantile\(.*?(\w+_bucket).*\)\s*>\s*([0-9.]+)\s*$", re.DOTALL)
    checked = 0
    for rule in alert_rules():
        match = quantile_alert.search(rule["expr"])
        if match:
            series, threshold = match[1], float(match[2])
            assert threshold < highest[series], f"{rule['alert']}: {threshold} >= {series}'s top bucket"
            checked += 1
    assert checked >= 2


AGGREGATION = re.compile(
    r"\b(sum|min|max|avg|count|count_values|group|stddev|stdvar|topk|bottomk|quantile)\s*"
    r"(?:(by|without)\s*\(([^)]*)\))?\s*\("
)


def aggregations_without_namespace(expr: str) -> list[str]:
    """The aggregations of `expr` whose result drops the `namespace` label (prefix `by` form, as the rules write it)."""
    return [
        match.group(0)
        for match in AGGREGATION.finditer(expr)
        if not (match.group(2) == "by" and "namespace" in {label.strip() for label in match.group(3).split(",")})
    ]


def test_every_aggregation_keeps_the_namespace() -> None:
    """dev and prod in one cluster: no rule adds up or compares series across namespaces."""
    assert aggregations_without_namespace("sum(rate(x[5m])) / count by (pod) (y) > max by (namespace) (z)") == [
        "sum(",
        "count by (pod) (",
    ]
    offenders = {rule["alert"]: aggregations_without_namespace(rule["expr"]) for rule in alert_rules()}
    assert {alert: found for alert, found in offenders.items() if found} == {}
