"""The model monitor in the chart: a singleton Deployment whose settings follow the values, the one pod
with a service-account token (only with retraining on) and a Role that allows exactly what
monitor.retraining.KubernetesLauncher calls, the retrain CronJob's name shared through one helper,
and NetworkPolicies that let it reach S3, MLflow and (for retraining) the API server."""

import copy
from collections.abc import Callable

import chart_invariants as inv
import pytest
from chart_tools import NAMESPACE, Doc, python_service

RETRAINING = "08-monitor-retraining"
CRONJOB = "mlops-trainer-retrain"
# monitor.retraining.KubernetesLauncher: read_namespaced_cron_job, list_namespaced_job, create_namespaced_job.
LEAST_PRIVILEGE = [
    {"apiGroups": ["batch"], "resources": ["cronjobs"], "resourceNames": [CRONJOB], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "create"]},
]


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _kinds(docs: list[Doc], *kinds: str) -> list[Doc]:
    return [d for d in docs if d["kind"] in kinds]


def _monitor(docs: list[Doc]) -> Doc:
    return _get(docs, "Deployment", "mlops-monitor")


def _container(docs: list[Doc]) -> Doc:
    [container] = _monitor(docs)["spec"]["template"]["spec"]["containers"]
    assert python_service(container) == "monitor"
    return container


def _env(docs: list[Doc]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(docs)["env"] if "value" in e}


def test_monitor_is_a_singleton_scraped_on_its_metrics_port(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["01-default"]
    monitor = _monitor(docs)
    assert monitor["spec"]["replicas"] == 1
    assert monitor["spec"]["strategy"] == {"type": "Recreate"}
    assert not [
        h for h in _kinds(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == "mlops-monitor"
    ]
    container = _container(docs)
    assert container["ports"] == [{"name": "metrics", "containerPort": 9104}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    service = _get(docs, "Service", "mlops-monitor")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9104, "targetPort": "metrics"}]
    endpoint = _get(docs, "ServiceMonitor", "mlops-monitor")["spec"]["endpoints"]
    assert [(e["port"], e["path"]) for e in endpoint] == [("metrics", "/metrics")]


def test_default_settings(rendered: dict[str, list[Doc]]) -> None:
    env = _env(rendered["01-default"])
    assert {k: v for k, v in env.items() if k.startswith(("MONITOR_", "DRIFT_", "QUALITY_", "LABEL_", "RETRAIN_"))} == {
        "MONITOR_METRICS_PORT": "9104",
        "MONITOR_WINDOW_S": "3600",
        "DRIFT_PSI_THRESHOLD": "0.2",
        "DRIFT_MISSING_RATE_THRESHOLD": "0.1",
        "DRIFT_MIN_ROWS": "200",
        "QUALITY_LOOKBACK_DAYS": "30",
        "QUALITY_MIN_LABELED_ROWS": "100",
        "LABEL_MAX_AGE_S": "604800",
        "RETRAIN_MODE": "off",
        "RETRAIN_DRIFT_WINDOWS": "3",
        "RETRAIN_MIN_LIVE_AUC": "0.6",
        "RETRAIN_NEW_LABELS": "0",
        "RETRAIN_EVERY_S": "0",
        "RETRAIN_COOLDOWN_S": "21600",
        "RETRAIN_CRONJOB": CRONJOB,
    }
    assert (env["LOGS_BUCKET"], env["LOGS_PREFIX"]) == ("mlops-inference-logs", "inference-logs")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlops-mlflow:5000"
    assert env["TRITON_MODEL_NAME"] == "credit_default"  # the name the BFF logs its predictions under


def test_retraining_settings_follow_the_values(rendered: dict[str, list[Doc]]) -> None:
    env = _env(rendered[RETRAINING])
    assert {
        "MONITOR_WINDOW_S": "900",
        "DRIFT_PSI_THRESHOLD": "0.25",
        "DRIFT_MIN_ROWS": "500",
        "QUALITY_LOOKBACK_DAYS": "14",
        "QUALITY_MIN_LABELED_ROWS": "200",
        "LABEL_MAX_AGE_S": "172800",
        "RETRAIN_MODE": "kubernetes",
        "RETRAIN_DRIFT_WINDOWS": "4",
        "RETRAIN_MIN_LIVE_AUC": "0.65",
        "RETRAIN_NEW_LABELS": "50000",
        "RETRAIN_EVERY_S": "2592000",  # whole numbers without an exponent
        "RETRAIN_COOLDOWN_S": "43200",
        "RETRAIN_CRONJOB": CRONJOB,
        "RETRAIN_NAMESPACE": NAMESPACE,
        "MONITOR_EXPERIMENT_NAME": "credit-default-monitoring-ci",
    }.items() <= env.items()


def test_without_retraining_the_monitor_has_no_rights(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["01-default"]
    assert _kinds(docs, "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding") == []
    spec = _monitor(docs)["spec"]["template"]["spec"]
    # Its own ServiceAccount all the same: turning retraining on changes no other workload's identity.
    assert spec["serviceAccountName"] == "mlops-monitor"
    assert spec["automountServiceAccountToken"] is False
    assert _get(docs, "ServiceAccount", "mlops-monitor")["automountServiceAccountToken"] is False
    assert "RETRAIN_NAMESPACE" not in _env(docs)


@pytest.mark.parametrize("scenario", [RETRAINING, "06-ingress-existing-secrets"])
def test_retraining_role_is_exactly_least_privilege(rendered: dict[str, list[Doc]], scenario: str) -> None:
    docs = rendered[scenario]
    [role] = _kinds(docs, "Role")
    [binding] = _kinds(docs, "RoleBinding")
    assert _kinds(docs, "ClusterRole", "ClusterRoleBinding") == []
    assert role["metadata"]["name"] == "mlops-monitor"
    assert role["rules"] == LEAST_PRIVILEGE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mlops-monitor"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlops-monitor", "namespace": NAMESPACE}]
    # The one pod with a token is the monitor's, with that ServiceAccount.
    with_token = [
        (o["kind"], o["metadata"]["name"])
        for o, t in inv.pod_templates(docs)
        if t["spec"].get("automountServiceAccountToken") is not False
    ]
    assert with_token == [("Deployment", "mlops-monitor")]
    assert _monitor(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "mlops-monitor"
    # The CronJob the Role names is the one the monitor copies.
    assert _get(docs, "CronJob", CRONJOB)


def test_the_cronjob_name_is_one_definition(render: Callable[..., list[Doc]]) -> None:
    """A long release name truncates the CronJob's name (52 characters); the monitor and its Role follow."""
    docs = render(
        {
            "fullnameOverride": "a-very-long-release-name-for-the-credit-default-platform",
            "monitor.retraining.enabled": True,
        }
    )
    [cronjob] = [
        d
        for d in docs
        if d["kind"] == "CronJob" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    ]
    name = cronjob["metadata"]["name"]
    assert len(name) == 52  # cut short: "-retrain" itself is gone
    [role] = _kinds(docs, "Role")
    [monitor] = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "monitor"
    ]
    env = {e["name"]: e.get("value") for e in monitor["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RETRAIN_CRONJOB"] == name
    assert role["rules"][0]["resourceNames"] == [name]
    assert inv.monitor_problems(docs) == []


def test_suspended_cronjob(rendered: dict[str, list[Doc]]) -> None:
    assert _get(rendered[RETRAINING], "CronJob", CRONJOB)["spec"]["suspend"] is True
    assert _get(rendered["01-default"], "CronJob", CRONJOB)["spec"]["suspend"] is False


def _egress_ports(policy: Doc) -> list[tuple[frozenset[int], list[Doc] | None]]:
    return [(frozenset(p["port"] for p in rule["ports"]), rule.get("to")) for rule in policy["spec"]["egress"]]


def test_network_policy(rendered: dict[str, list[Doc]]) -> None:
    # Without retraining: DNS, MinIO, MLflow and Prometheus (the rollout analysis) only; scraped on the
    # metrics port.
    policy = _get(rendered["01-default"], "NetworkPolicy", "mlops-monitor")
    assert [ports for ports, _ in _egress_ports(policy)] == [
        frozenset({53}),
        frozenset({9000}),
        frozenset({5000}),
        frozenset({9090}),
    ]
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": 9104, "protocol": "TCP"}],
        }
    ]
    # The backing services let it in.
    monitor_peer = {"app.kubernetes.io/name": "mlops", "app.kubernetes.io/instance": "mlops"}
    monitor_peer["app.kubernetes.io/component"] = "monitor"
    for name in ("mlops-minio", "mlops-mlflow"):
        peers = _get(rendered["01-default"], "NetworkPolicy", name)["spec"]["ingress"][0]["from"]
        assert {"podSelector": {"matchLabels": monitor_peer}} in peers, name
    # With retraining: the API server too, narrowed to its endpoints where the values say so.
    narrowed = _egress_ports(_get(rendered[RETRAINING], "NetworkPolicy", "mlops-monitor"))
    assert narrowed[-1] == (frozenset({6443}), [{"ipBlock": {"cidr": "10.0.0.10/32"}}])
    anywhere = _egress_ports(_get(rendered["06-ingress-existing-secrets"], "NetworkPolicy", "mlops-monitor"))
    assert anywhere[-1] == (frozenset({443, 6443}), None)
    assert len(anywhere) == len(narrowed) == 5


def test_disabled_monitor_renders_nothing_of_it(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["02-minimal"]
    assert [d for d in docs if "monitor" in d["metadata"]["name"]] == []


def _broken(docs: list[Doc], mutate: Callable[[list[Doc]], object]) -> list[Doc]:
    docs = copy.deepcopy(docs)
    mutate(docs)
    return docs


def _rules(docs: list[Doc]) -> list[Doc]:
    return _get(docs, "Role", "mlops-monitor")["rules"]


def _set_env(docs: list[Doc], name: str, value: str) -> None:
    next(e for e in _container(docs)["env"] if e["name"] == name)["value"] = value


BREAKAGES = {
    "wildcard verbs": (inv.rbac_problems, lambda d: _rules(d)[1].update(verbs=["*"])),
    "Role that reads Secrets": (
        inv.rbac_problems,
        lambda d: _rules(d).append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
    ),
    "Role bound to another workload's ServiceAccount": (
        inv.rbac_problems,
        lambda d: _get(d, "RoleBinding", "mlops-monitor")["subjects"][0].update(name="mlops"),
    ),
    "the Role shared with the trainer": (
        inv.rbac_problems,
        lambda d: _get(d, "CronJob", CRONJOB)["spec"]["jobTemplate"]["spec"]["template"]["spec"].update(
            serviceAccountName="mlops-monitor", automountServiceAccountToken=True
        ),
    ),
    "monitor without a token": (
        inv.rbac_problems,
        lambda d: _monitor(d)["spec"]["template"]["spec"].update(automountServiceAccountToken=False),
    ),
    "RETRAIN_CRONJOB names no CronJob": (
        inv.monitor_problems,
        lambda d: _set_env(d, "RETRAIN_CRONJOB", "mlops-retrain"),
    ),
    "Role reads another CronJob": (inv.monitor_problems, lambda d: _rules(d)[0].update(resourceNames=["other"])),
    "Role reads every CronJob": (inv.monitor_problems, lambda d: _rules(d)[0].pop("resourceNames")),
    "Role cannot create Jobs": (inv.monitor_problems, lambda d: _rules(d)[1].update(verbs=["list"])),
    "RETRAIN_NAMESPACE elsewhere": (inv.monitor_problems, lambda d: _set_env(d, "RETRAIN_NAMESPACE", "default")),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_broken_retraining_render_is_reported(rendered: dict[str, list[Doc]], breakage: str) -> None:
    check, mutate = BREAKAGES[breakage]
    docs = rendered[RETRAINING]
    assert check(docs) == []
    assert check(_broken(docs, mutate)), f"{check.__name__} did not notice: {breakage}"
