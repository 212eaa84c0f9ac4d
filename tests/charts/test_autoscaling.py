"""Scaling signals (issue #16): `autoscaling.engine: keda` replaces the CPU-only HPAs by KEDA ScaledObjects
(Triton on queue time and requests in flight, the log worker on its queue's length, CPU as fallback), and a
headless Service lets the Triton client balance its calls over the Triton pods."""

import copy
from collections.abc import Callable
from pathlib import Path

import chart_invariants as inv
import pytest
from chart_tools import REPO, Doc, HelmError, helm_template

PROD = REPO / "argocd" / "environments" / "prod" / "values.yaml"

KEDA = "10-keda"


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _kinds(docs: list[Doc], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in docs if d["kind"] == kind}


def test_hpa_is_the_default_engine_and_keda_replaces_it(rendered: dict[str, list[Doc]]) -> None:
    default, keda = rendered["01-default"], rendered[KEDA]
    assert _kinds(default, "HorizontalPodAutoscaler") == {"mlops-bff", "mlops-triton", "mlops-log-worker"}
    assert _kinds(default, "ScaledObject") == set()
    assert _kinds(keda, "HorizontalPodAutoscaler") == set()
    assert _kinds(keda, "ScaledObject") == {"mlops-bff", "mlops-triton", "mlops-log-worker"}
    assert _kinds(keda, "TriggerAuthentication") == {"mlops-log-worker"}


def test_triton_scales_on_queue_time_and_in_flight_requests(rendered: dict[str, list[Doc]]) -> None:
    triggers = {
        t.get("name", t["type"]): t for t in _get(rendered[KEDA], "ScaledObject", "mlops-triton")["spec"]["triggers"]
    }
    assert set(triggers) == {"queue-time", "in-flight", "cpu"}
    queue_time = triggers["queue-time"]
    assert queue_time["metricType"] == "Value"
    assert "nv_inference_queue_duration_us" in queue_time["metadata"]["query"]
    assert queue_time["metadata"]["threshold"] == "5"
    in_flight = triggers["in-flight"]
    assert in_flight["metricType"] == "AverageValue"
    assert "nv_inference_pending_request_count" in in_flight["metadata"]["query"]
    assert in_flight["metadata"]["threshold"] == "4"
    assert triggers["cpu"]["metadata"] == {"value": "70"}


def test_log_worker_scales_on_its_queue_length(rendered: dict[str, list[Doc]]) -> None:
    [queue] = [
        t
        for t in _get(rendered[KEDA], "ScaledObject", "mlops-log-worker")["spec"]["triggers"]
        if t["type"] == "rabbitmq"
    ]
    assert queue["metadata"]["mode"] == "QueueLength"
    assert queue["metadata"]["value"] == "2000"
    assert queue["metadata"]["queueName"] == "inference-logs"


def test_keda_reads_rabbitmq_through_the_network_policy(rendered: dict[str, list[Doc]]) -> None:
    def peers(docs: list[Doc]) -> list[Doc]:
        return [p for rule in _get(docs, "NetworkPolicy", "mlops-rabbitmq")["spec"]["ingress"] for p in rule["from"]]

    keda_namespace = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    assert keda_namespace in peers(rendered[KEDA])
    assert keda_namespace not in peers(rendered["01-default"])


def test_a_renamed_queue_follows_the_worker(render: Callable[..., list[Doc]]) -> None:
    docs = render({"autoscaling.engine": "keda", "logWorker.settings.INFERENCE_LOG_QUEUE": "logs-v2"})
    [queue] = [t for t in _get(docs, "ScaledObject", "mlops-log-worker")["spec"]["triggers"] if t["type"] == "rabbitmq"]
    assert queue["metadata"]["queueName"] == "logs-v2"
    assert inv.keda_problems(docs) == []


BREAKAGES = {
    "HPA and ScaledObject on one Deployment": lambda d: d.append(
        {
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "mlops-triton"},
            "spec": {"scaleTargetRef": {"name": "mlops-triton"}},
        }
    ),
    "queue the worker does not consume": lambda d: next(
        t for t in _get(d, "ScaledObject", "mlops-log-worker")["spec"]["triggers"] if t["type"] == "rabbitmq"
    )["metadata"].update(queueName="inference-log"),
    "broker address from another Secret": lambda d: _get(d, "TriggerAuthentication", "mlops-log-worker")["spec"][
        "secretTargetRef"
    ][0].update(name="mlops-redis"),
    "Triton series of every namespace": lambda d: next(
        t for t in _get(d, "ScaledObject", "mlops-triton")["spec"]["triggers"] if t.get("name") == "in-flight"
    )["metadata"].update(query='sum(nv_inference_pending_request_count{job="mlops-triton"})'),
    "no CPU fallback": lambda d: _get(d, "ScaledObject", "mlops-bff")["spec"]["triggers"].clear(),
    "missing authentication": lambda d: d.remove(_get(d, "TriggerAuthentication", "mlops-log-worker")),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_keda_invariant_has_teeth(rendered: dict[str, list[Doc]], breakage: str) -> None:
    assert inv.keda_problems(rendered[KEDA]) == []
    docs = copy.deepcopy(rendered[KEDA])
    BREAKAGES[breakage](docs)
    assert inv.keda_problems(docs), breakage


def test_headless_triton_service_lists_the_ready_triton_pods(render: Callable[..., list[Doc]]) -> None:
    docs = render()
    headless = _get(docs, "Service", "mlops-triton-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is False
    assert headless["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "appProtocol": "http"}]
    triton = _get(docs, "Deployment", "mlops-triton")["spec"]["template"]["metadata"]["labels"]
    assert all(triton.get(k) == v for k, v in headless["selector"].items())
    # By default the BFF calls the ClusterIP Service; `bff.tritonService: headless` (prod) names every ready pod.
    bff = _get(docs, "Deployment", "mlops-bff")["spec"]["template"]["spec"]["containers"][0]
    assert inv.env_value(bff, "TRITON_HTTP_URL") == "mlops-triton:8000"
    switched = render({"bff.tritonService": "headless"})
    bff = _get(switched, "Deployment", "mlops-bff")["spec"]["template"]["spec"]["containers"][0]
    assert inv.env_value(bff, "TRITON_HTTP_URL") == "mlops-triton-headless:8000"
    assert "mlops-triton-headless" not in {
        d["metadata"]["name"] for d in render({"triton.headlessService.enabled": False})
    }
    with pytest.raises(HelmError, match=r"needs triton\.headlessService\.enabled"):
        render({"bff.tritonService": "headless", "triton.headlessService.enabled": False})


def test_prod_bff_balances_over_the_triton_pods(chart_dependencies: Path) -> None:
    docs = helm_template(value_files=[PROD], set_values={"global.platformImageTag": "0123abc"})
    bff = _get(docs, "Deployment", "mlops-bff")["spec"]["template"]["spec"]["containers"][0]
    assert inv.env_value(bff, "TRITON_HTTP_URL") == "mlops-triton-headless:8000"
    assert _get(docs, "Service", "mlops-triton-headless")["spec"]["clusterIP"] == "None"
