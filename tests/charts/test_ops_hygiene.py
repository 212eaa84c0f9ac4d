"""Ops hygiene of the rendered chart (issue #16): runbook links on every alert, the kube-prometheus-stack
release label on what its Prometheus selects, per-environment dashboards."""

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from chart_tools import REPO, Doc, helm_template
from observability_files import RUNBOOKS, alert_rules

BASE = "https://git.example.com/mlops/mlops-platform/blob/main"
ENVIRONMENTS = sorted((REPO / "argocd" / "environments").glob("*/values.yaml"))


def runbook_anchors() -> set[str]:
    """The anchors GitHub and GitLab give the runbook's `##` headings."""
    headings = [line[3:] for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")]
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def rendered_alerts(docs: list[Doc]) -> list[dict]:
    return [
        rule
        for d in docs
        if d["kind"] == "PrometheusRule"
        for group in d["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_every_rendered_alert_links_its_runbook_section_under_the_base_url(render: Callable[..., list[Doc]]) -> None:
    alerts = rendered_alerts(render({"monitoring.prometheusRules.runbookBaseUrl": BASE + "/"}))
    assert sorted(a["alert"] for a in alerts) == sorted(r["alert"] for r in alert_rules())
    anchors = runbook_anchors()
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == f"{BASE}/{RUNBOOKS.relative_to(REPO).as_posix()}", url
        assert anchor in anchors, f"{alert['alert']}: {url} names no section of runbooks.md"
        assert anchor == alert["alert"].lower(), url


def test_without_a_base_url_the_rules_are_the_files_as_they_are(render: Callable[..., list[Doc]]) -> None:
    alerts = rendered_alerts(render())
    assert {a["alert"]: a["annotations"]["runbook_url"] for a in alerts} == {
        r["alert"]: r["annotations"]["runbook_url"] for r in alert_rules()
    }


def test_a_runbook_base_url_must_be_a_url(render: Callable[..., list[Doc]]) -> None:
    from chart_tools import HelmError

    with pytest.raises(HelmError, match="runbookBaseUrl"):
        render({"monitoring.prometheusRules.runbookBaseUrl": "git.example.com/no-scheme"})


@pytest.mark.parametrize("values", ENVIRONMENTS, ids=lambda p: p.parent.name)
def test_environments_label_what_kube_prometheus_stack_selects_and_link_runbooks(
    chart_dependencies: Path, values: Path
) -> None:
    docs = helm_template(value_files=[values], set_values={"global.platformImageTag": "0123abc"})
    selected = [d for d in docs if d["kind"] in ("ServiceMonitor", "PrometheusRule")]
    assert {d["kind"] for d in selected} == {"ServiceMonitor", "PrometheusRule"}
    for doc in selected:
        assert doc["metadata"]["labels"].get("release") == "kube-prometheus-stack", doc["metadata"]["name"]
    for alert in rendered_alerts(docs):
        assert alert["annotations"]["runbook_url"].startswith("https://"), alert["alert"]
