"""The rollout in the chart: one `rollout` block reaches model sync (the policy's defaults, the grace
period) and the monitor (the same defaults, the analysis' limits and Prometheus), and the monitor may
reach that Prometheus; a mode the services do not know is refused by the schema."""

from collections.abc import Callable

import pytest
from chart_tools import Doc, HelmError, python_service

from mlops_common.rollout import RolloutSettings
from model_sync.settings import Settings as ModelSyncSettings
from monitor.settings import Settings as MonitorSettings

CANARY = "09-canary-rollout"


def _env(docs: list[Doc], deployment: str, service: str) -> dict[str, str]:
    pod = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment)["spec"]
    [container] = [c for c in pod["template"]["spec"]["containers"] if python_service(c) == service]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_one_policy_for_model_sync_and_the_monitor(rendered: dict[str, list[Doc]]) -> None:
    for scenario, mode, percent in (("01-default", "off", "10"), (CANARY, "canary", "20")):
        sync = _env(rendered[scenario], "mlops-triton", "model_sync")
        monitor = _env(rendered[scenario], "mlops-monitor", "monitor")
        for env in (sync, monitor):
            assert (env["ROLLOUT_MODE"], env["ROLLOUT_CANARY_PERCENT"], env["ROLLOUT_SHADOW_SAMPLE"]) == (
                mode,
                percent,
                "1",
            )
        # What the services parse them into: the chart's defaults are the settings' own.
        if scenario == "01-default":
            defaults = RolloutSettings()
            assert sync["ROLLOUT_MODE"] == defaults.rollout_mode.value
            assert float(sync["ROLLOUT_CANARY_PERCENT"]) == defaults.rollout_canary_percent
            assert float(sync["ROUTING_GRACE_S"]) == ModelSyncSettings.model_fields["routing_grace_s"].default
            for name in ("rollout_min_calls", "rollout_max_error_rate", "rollout_max_latency_ratio"):
                assert float(monitor[name.upper()]) == MonitorSettings.model_fields[name].default, name
    canary = _env(rendered[CANARY], "mlops-monitor", "monitor")
    assert canary["PROMETHEUS_URL"] == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
    assert (canary["ROLLOUT_MIN_CALLS"], canary["ROLLOUT_MIN_DURATION_S"]) == ("1000", "1800")
    assert _env(rendered[CANARY], "mlops-triton", "model_sync")["ROUTING_GRACE_S"] == "15"


def test_the_monitor_may_query_prometheus(rendered: dict[str, list[Doc]]) -> None:
    policy = next(
        d for d in rendered[CANARY] if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mlops-monitor"
    )
    prometheus = [rule for rule in policy["spec"]["egress"] if {"port": 9090, "protocol": "TCP"} in rule["ports"]]
    assert prometheus == [
        {
            "ports": [{"port": 9090, "protocol": "TCP"}],
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
        }
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rollout.mode": "blue-green"}, "/rollout/mode"),
        ({"rollout.canaryPercent": 150}, "/rollout/canaryPercent"),
        ({"rollout.analysis.prometheusUrl": "prometheus:9090"}, "/rollout/analysis/prometheusUrl"),
    ],
)
def test_values_the_services_cannot_take_are_refused(
    render: Callable[..., list[Doc]], values: dict[str, object], message: str
) -> None:
    with pytest.raises(HelmError, match=message):
        render(values)
