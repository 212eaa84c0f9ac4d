"""Availability of serving (issue #16): Triton runs at least two pods in prod, a drain never takes the last
one, and the pods of Triton and the BFF spread over nodes and zones."""

from collections.abc import Callable
from pathlib import Path

import pytest
from chart_tools import REPO, Doc, HelmError, helm_template

PROD = REPO / "argocd" / "environments" / "prod" / "values.yaml"


def _get(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def test_prod_runs_two_triton_pods_and_a_drain_keeps_one(chart_dependencies: Path) -> None:
    docs = helm_template(value_files=[PROD], set_values={"global.platformImageTag": "0123abc"})
    assert _get(docs, "HorizontalPodAutoscaler", "mlops-triton")["spec"]["minReplicas"] == 2
    assert _get(docs, "PodDisruptionBudget", "mlops-triton")["spec"] == {
        "minAvailable": 1,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "mlops",
                "app.kubernetes.io/instance": "mlops",
                "app.kubernetes.io/component": "triton",
            }
        },
    }


def test_one_pod_gets_no_budget(render: Callable[..., list[Doc]]) -> None:
    """Triton and the log worker start at one pod by default: no PDB (it would evict it or block drains);
    the BFF, at two, has one."""
    docs = render()
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert budgets == {"mlops-bff"}
    assert "mlops-triton" in {
        d["metadata"]["name"]
        for d in render({"triton.autoscaling.minReplicas": 2})
        if d["kind"] == "PodDisruptionBudget"
    }
    off = render({"triton.autoscaling.enabled": False, "triton.replicaCount": 3})
    assert _get(off, "PodDisruptionBudget", "mlops-triton")["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(
    "values",
    [
        {"bff.podDisruptionBudget.minAvailable": 2},
        {"bff.podDisruptionBudget.maxUnavailable": 0},
        {"bff.podDisruptionBudget.maxUnavailable": "100%"},
    ],
    ids=["min-available-all", "max-unavailable-none", "max-unavailable-all"],
)
def test_a_budget_that_blocks_drains_or_allows_an_outage_is_refused(
    render: Callable[..., list[Doc]], values: dict[str, object]
) -> None:
    with pytest.raises(HelmError, match=r"bff\.podDisruptionBudget keeps"):
        render(values)


def test_percent_budget_is_rounded_up_like_the_disruption_controller(render: Callable[..., list[Doc]]) -> None:
    docs = render({"bff.autoscaling.minReplicas": 4, "bff.podDisruptionBudget.maxUnavailable": "50%"})
    assert _get(docs, "PodDisruptionBudget", "mlops-bff")["spec"]["maxUnavailable"] == "50%"


@pytest.mark.parametrize("deployment", ["mlops-triton", "mlops-bff"])
def test_triton_and_bff_spread_over_nodes_and_zones(render: Callable[..., list[Doc]], deployment: str) -> None:
    spec = _get(render(), "Deployment", deployment)["spec"]["template"]["spec"]
    keys = {(c["topologyKey"], c["whenUnsatisfiable"], c["maxSkew"]) for c in spec["topologySpreadConstraints"]}
    assert keys == {
        ("kubernetes.io/hostname", "ScheduleAnyway", 1),
        ("topology.kubernetes.io/zone", "ScheduleAnyway", 1),
    }
    for constraint in spec["topologySpreadConstraints"]:
        assert constraint["matchLabelKeys"] == ["pod-template-hash"], "each rollout's pods spread on their own"
