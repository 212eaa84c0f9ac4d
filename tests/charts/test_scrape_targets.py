"""The local stack's Prometheus and the cluster's scrape the same endpoints with the same labels.

The local scrape config is generated from observability/scrape-targets.yaml (devstack.prometheus);
here the chart's ServiceMonitors, as rendered, must name exactly those Services, ports and paths.
"""

from chart_tools import NAMESPACE, RELEASE, Doc

from devstack.prometheus import NAMESPACE as LOCAL_NAMESPACE
from devstack.prometheus import RELEASE as LOCAL_RELEASE
from devstack.prometheus import scrape_config, scrape_targets


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def servicemonitor_endpoints(docs: list[Doc]) -> set[tuple[str, str, str]]:
    """(Service name, port name, path) of every ServiceMonitor endpoint, through the Service it selects."""
    services = [d for d in docs if d["kind"] == "Service"]
    found = set()
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        [service] = [s for s in services if _selects(selector, s["metadata"].get("labels", {}))]
        port_names = {port.get("name") for port in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names, f"{monitor['metadata']['name']}: no port {endpoint['port']}"
            found.add((service["metadata"]["name"], endpoint["port"], endpoint.get("path", "/metrics")))
    return found


# Components the chart deploys only when asked to (jobs.enabled): their targets are scraped where they run.
OPTIONAL = {f"{RELEASE}-job-worker"}
WITH_JOBS = {"jobs.enabled": True, "bff.apiKeys.required": True, "bff.apiKeys.existingSecret": "mlops-api-keys"}


def test_servicemonitors_match_the_local_scrape_targets(rendered: dict[str, list[Doc]], render) -> None:
    assert (LOCAL_RELEASE, LOCAL_NAMESPACE) == (RELEASE, NAMESPACE)
    local = {(t.service_name, t.port, t.path) for t in scrape_targets()}
    assert servicemonitor_endpoints(render(WITH_JOBS)) == local
    assert servicemonitor_endpoints(rendered["01-default"]) == {t for t in local if t[0] not in OPTIONAL}


def test_local_targets_get_the_operator_labels() -> None:
    addresses = {t.container: f"127.0.0.1:{9000 + i}" for i, t in enumerate(scrape_targets())}
    config = scrape_config(addresses, interval_s=5)
    jobs = {job["static_configs"][0]["targets"][0]: job for job in config["scrape_configs"]}
    labels = {rule["target_label"]: rule["replacement"] for rule in jobs[addresses["model-sync"]]["relabel_configs"]}
    # The sidecar's series are labelled with the Triton Service, as the Operator labels them.
    assert labels == {
        "job": "mlops-triton",
        "service": "mlops-triton",
        "namespace": "mlops",
        "pod": "mlops-triton-local",
        "container": "model-sync",
        "endpoint": "sync-metrics",
    }
    assert config["rule_files"]
