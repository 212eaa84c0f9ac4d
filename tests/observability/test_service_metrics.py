"""The services' metrics as Prometheus stores them: no label that Prometheus or the Operator set on
scraped series, and every label a dashboard or rule filters on exists on the metric it filters."""

import re

import pytest
from observability_files import DASHBOARDS, TARGET_LABELS, alert_rules, dashboard_expressions, load_dashboard
from prometheus_client import CollectorRegistry


@pytest.fixture(scope="module")
def registries() -> dict[str, CollectorRegistry]:
    # bff.inference_log registers the publisher's metrics in the BFF's registry.
    from bff.inference_log import REGISTRY as BFF
    from bff.metrics import API_KEY_RATE_LIMITED, API_KEY_REQUESTS, track_routing
    from job_worker.worker import REGISTRY as JOB_WORKER
    from log_worker.worker import REGISTRY as LOG_WORKER
    from mlops_common.rollout import RolloutMode, RolloutPolicy, Routing
    from model_sync.sync import REGISTRY as MODEL_SYNC

    # The per-version series exist once a routing names the versions: as during a canary.
    track_routing(None, Routing("1", "2", RolloutPolicy(RolloutMode.CANARY)))
    # The per-key series exist once API keys are configured (create_app with API_KEYS).
    for counter in (API_KEY_REQUESTS, API_KEY_RATE_LIMITED):
        counter.labels("a-key")
    return {"bff": BFF, "log_worker": LOG_WORKER, "model_sync": MODEL_SYNC, "job_worker": JOB_WORKER}


def service_label_names(registries: dict[str, CollectorRegistry]) -> dict[str, set[str]]:
    """Series name -> the label names its samples carry, for every service's own metric."""
    labels: dict[str, set[str]] = {}
    for service, registry in registries.items():
        for family in registry.collect():
            for sample in family.samples:
                if sample.name.startswith(f"{service}_"):
                    labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def test_no_metric_uses_a_label_that_prometheus_sets(registries: dict[str, CollectorRegistry]) -> None:
    clashes = {
        (family.name, name)
        for registry in registries.values()
        for family in registry.collect()
        for sample in family.samples
        for name in sample.labels
        if name in TARGET_LABELS
    }
    assert clashes == set(), "these labels would be overwritten by the scrape (kept as exported_<name>)"


SELECTOR = re.compile(r"\b((?:bff|log_worker|model_sync)_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


def test_queries_filter_on_labels_the_metrics_have(registries: dict[str, CollectorRegistry]) -> None:
    """A filter on a label the metric lacks (`bff_requests_total{code="500"}`) would be empty forever."""
    labels = service_label_names(registries)
    expressions = [e for p in DASHBOARDS for e in dashboard_expressions(load_dashboard(p))]
    expressions += [rule["expr"] for rule in alert_rules()]
    unknown = {
        (series, label)
        for expr in expressions
        for series, matchers in SELECTOR.findall(expr)
        for label in MATCHER.findall(matchers)
        if label not in labels[series] | TARGET_LABELS
    }
    assert unknown == set()
    assert any(SELECTOR.search(e) for e in expressions), "the check found no selector to check"
