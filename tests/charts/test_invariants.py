"""Rules across objects that schemas cannot see, on every ci/ scenario, and proof that each rule fails
on a deliberately broken render."""

import copy
import shutil
from pathlib import Path

import chart_invariants as inv
import pytest
from chart_tools import (
    CI_VALUES,
    NAMESPACE,
    REPO,
    Doc,
    helm_dependency_build,
    helm_template,
    object_id,
    pod_templates,
    python_service,
)

SCENARIOS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("check", inv.ALL_CHECKS, ids=lambda f: f.__name__)
def test_invariant(rendered: dict[str, list[Doc]], scenario: str, check: object) -> None:
    assert check(rendered[scenario]) == []  # type: ignore[operator]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_in_the_release_namespace(rendered: dict[str, list[Doc]], scenario: str) -> None:
    assert inv.namespace_problems(rendered[scenario], NAMESPACE) == []


def test_platform_workloads_run_the_services_and_triton(rendered: dict[str, list[Doc]]) -> None:
    """Every container of the platform's own workloads is a service (`python -m`) or Triton."""
    docs = rendered["01-default"]
    programs = set()
    for owner, template in pod_templates(docs):
        if owner["metadata"]["labels"]["app.kubernetes.io/name"] != "mlops":
            continue
        for container in inv.containers(template):
            # The module a service container runs (`python -m <module>`), or the program.
            program = container["command"][2] if python_service(container) else container["command"][0]
            programs.add((owner["kind"], program, tuple(container.get("command", [])[3:])))
    assert programs == {
        ("Job", "feature_store", ("bootstrap",)),
        ("Job", "feature_store", ("run",)),
        ("CronJob", "feature_store", ("materialize",)),
        ("Job", "feature_store", ("wait-run",)),
        ("Job", "trainer", ()),
        ("CronJob", "trainer", ()),
        ("Deployment", "model_sync", ("--once",)),
        ("Deployment", "model_sync", ()),
        ("Deployment", "tritonserver", ()),
        ("Deployment", "bff", ()),
        ("Deployment", "log_worker", ()),
        ("CronJob", "log_worker.maintenance", ()),
        ("Deployment", "monitor", ()),
        ("CronJob", "batch_scoring", ()),
    }


def test_default_autoscaling_ranges(rendered: dict[str, list[Doc]]) -> None:
    ranges = {
        d["spec"]["scaleTargetRef"]["name"]: (d["spec"]["minReplicas"], d["spec"]["maxReplicas"])
        for d in rendered["01-default"]
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert ranges == {"mlops-bff": (2, 10), "mlops-triton": (1, 5), "mlops-log-worker": (1, 4)}


def test_bff_api_is_a_nodeport_on_30080_by_default_and_its_metrics_are_not(rendered: dict[str, list[Doc]]) -> None:
    services = {d["metadata"]["name"]: d["spec"] for d in rendered["01-default"] if d["kind"] == "Service"}
    public, internal = services["mlops-bff-public"], services["mlops-bff"]
    assert public["type"] == "NodePort"
    assert public["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "nodePort": 30080}]
    assert internal["type"] == "ClusterIP"
    assert [p["name"] for p in internal["ports"]] == ["http", "metrics"]


def test_bff_metrics_port_is_open_to_prometheus_only(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["01-default"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mlops-bff")
    by_port = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
    assert by_port == {
        8080: None,
        9101: [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    }
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == "mlops-bff")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    ingress_backends = [
        path["backend"]["service"]
        for d in rendered["06-ingress-existing-secrets"]
        if d["kind"] == "Ingress"
        for rule in d["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert ingress_backends
    assert all(b["port"]["name"] == "http" for b in ingress_backends)


def test_gpu_scenario_gives_triton_a_gpu(rendered: dict[str, list[Doc]]) -> None:
    triton = next(
        d for d in rendered["04-gpu"] if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlops-triton"
    )
    server = next(c for c in triton["spec"]["template"]["spec"]["containers"] if c["name"] == "triton")
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--allow-gpu-metrics=true" in server["args"]
    assert triton["spec"]["template"]["spec"]["tolerations"]


def _rabbitmq_objects(docs: list[Doc]) -> dict[str, Doc]:
    return {d["kind"]: d for d in docs if d["metadata"]["name"].startswith("mlops-rabbitmq")}


def test_rabbitmq_prometheus_plugin_is_enabled_and_scraped_per_queue(render: object) -> None:
    objects = _rabbitmq_objects(render())  # type: ignore[operator]
    assert objects["ConfigMap"]["data"]["enabled_plugins"].strip() == "[rabbitmq_prometheus]."
    broker = objects["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    plugins_file = next(e["value"] for e in broker["env"] if e["name"] == "RABBITMQ_ENABLED_PLUGINS_FILE")
    mounts = {m["name"]: m["mountPath"] for m in broker["volumeMounts"]}
    assert plugins_file == f"{mounts['plugins']}/enabled_plugins"
    assert {"name": "prometheus", "containerPort": 15692} in broker["ports"]
    endpoint = objects["ServiceMonitor"]["spec"]["endpoints"][0]
    # Per-object: one series per queue, labelled `queue` and `vhost` (the aggregated /metrics has no queue label).
    assert (endpoint["port"], endpoint["path"]) == ("prometheus", "/metrics/per-object")

    off = _rabbitmq_objects(render({"rabbitmq.metrics.enabled": False}))  # type: ignore[operator]
    assert off["ConfigMap"]["data"]["enabled_plugins"].strip() == "[]."
    assert "ServiceMonitor" not in off
    assert [p["name"] for p in off["Service"]["spec"]["ports"]] == ["amqp"]


def _calls_the_kubernetes_api(template: Doc) -> bool:
    """The monitor with retraining on (RETRAIN_MODE=kubernetes): the one pod that needs a token."""
    return any(
        python_service(c) == "monitor" and inv.env_value(c, "RETRAIN_MODE") == "kubernetes"
        for c in inv.containers(template)
    )


def test_secure_defaults(rendered: dict[str, list[Doc]]) -> None:
    for name, docs in rendered.items():
        for owner, template in pod_templates(docs):
            spec = template["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, (name, object_id(owner))
            # Only the retraining monitor gets a token (rbac_problems checks its Role).
            assert spec["automountServiceAccountToken"] is _calls_the_kubernetes_api(template), (name, object_id(owner))
            for container in inv.containers(template):
                context = container["securityContext"]
                where = (name, object_id(owner), container["name"])
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["capabilities"]["drop"] == ["ALL"], where
                assert {"requests", "limits"} <= container["resources"].keys(), where


def test_bff_probe_paths_are_routes_of_the_bff(rendered: dict[str, list[Doc]]) -> None:
    from bff.app import create_app

    # The health routes are the app's own (the API routes come in through a router of their own).
    routes = {route.path for route in create_app().routes if hasattr(route, "path")}
    probed = inv.http_probe_paths(rendered["01-default"], "bff")
    assert probed == {"/health/live", "/health/ready"}
    assert probed <= routes, f"probed {probed}, served {routes}"


def test_bff_shutdown_and_spool_volume_follow_the_values(render: object) -> None:
    """The grace period is computed from the budgets the BFF is given, the spool volume from its limit."""
    values = {
        "bff.shutdown.preStopSeconds": 7,
        "bff.shutdown.drainSeconds": 45,
        "bff.logSpool.maxBytes": 2 << 30,
        "bff.logSpool.segmentBytes": 32 << 20,
    }
    docs = render(values)  # type: ignore[operator]
    spec = _get(docs, "Deployment", "mlops-bff")["spec"]["template"]["spec"]
    bff = _container(docs, "Deployment", "mlops-bff", "bff")
    assert spec["terminationGracePeriodSeconds"] == 7 + 10 + 45 + 10
    assert bff["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "7"]}}
    assert {name: inv.env_value(bff, name) for name in ("LOG_DRAIN_TIMEOUT_S", "BFF_GRACEFUL_SHUTDOWN_S")} == {
        "LOG_DRAIN_TIMEOUT_S": "45",
        "BFF_GRACEFUL_SHUTDOWN_S": "10",
    }
    assert inv.env_value(bff, "LOG_SPOOL_MAX_BYTES") == str(2 << 30)
    assert inv.env_value(bff, "LOG_SPOOL_SEGMENT_BYTES") == str(32 << 20)
    [spool] = [v for v in spec["volumes"] if v["name"] == "log-spool"]
    assert spool["emptyDir"]["sizeLimit"] == "2096Mi"  # 2048 + 2048/128 + 32
    assert inv.bff_shutdown_problems(docs) == []


def test_mlflow_probe_path_is_served_by_mlflow() -> None:
    from mlflow.server import app

    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert "/health" in rules


# ---- each rule has teeth: a deliberately broken render is reported


def _broken(rendered: dict[str, list[Doc]], mutate: object) -> list[Doc]:
    docs = copy.deepcopy(rendered["01-default"])
    mutate(docs)  # type: ignore[operator]
    return docs


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(docs: list[Doc], kind: str, name: str, container: str) -> Doc:
    return next(c for c in inv.containers(_get(docs, kind, name)["spec"]["template"]) if c["name"] == container)


BREAKAGES = {
    "service selects nothing": (
        inv.selector_problems,
        lambda d: _get(d, "Service", "mlops-bff")["spec"]["selector"].update({"app.kubernetes.io/component": "bf"}),
    ),
    "network policy peer matches nothing": (
        inv.selector_problems,
        lambda d: _get(d, "NetworkPolicy", "mlops-redis")["spec"]["ingress"][0]["from"][0]["podSelector"][
            "matchLabels"
        ].update({"app.kubernetes.io/component": "feature-pipelin"}),
    ),
    "probe names a missing port": (
        inv.named_port_problems,
        lambda d: _container(d, "Deployment", "mlops-bff", "bff")["readinessProbe"]["httpGet"].update({"port": "web"}),
    ),
    "service monitor names a missing port": (
        inv.named_port_problems,
        lambda d: _get(d, "ServiceMonitor", "mlops-log-worker")["spec"]["endpoints"][0].update({"port": "prometheus"}),
    ),
    "scraped port closed by the network policies": (
        inv.scrape_problems,
        lambda d: _get(d, "NetworkPolicy", "mlops-rabbitmq")["spec"]["ingress"].pop(),
    ),
    "HPA targets a missing deployment": (
        inv.hpa_problems,
        lambda d: _get(d, "HorizontalPodAutoscaler", "mlops-bff")["spec"]["scaleTargetRef"].update(
            {"name": "mlops-frontend"}
        ),
    ),
    "env var no settings class reads": (
        inv.env_problems,
        lambda d: _container(d, "Deployment", "mlops-bff", "bff")["env"].append({"name": "BFF_PROT", "value": "8080"}),
    ),
    "downward-API variable the arguments do not use": (
        inv.env_problems,
        lambda d: _get(d, "CronJob", "mlops-batch-scoring")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
            "containers"
        ][0].update(args=["--as-of=now", "--output=s3://mlops-inference-logs/batch-scores"]),
    ),
    "env var of the wrong type": (
        inv.env_problems,
        lambda d: _container(d, "Deployment", "mlops-log-worker", "log-worker")["env"].append(
            {"name": "BATCH_MAX_RECORDS", "value": "many"}
        ),
    ),
    "needed setting left to its local default": (
        inv.env_problems,
        lambda d: _container(d, "Deployment", "mlops-bff", "bff").update(
            env=[e for e in _container(d, "Deployment", "mlops-bff", "bff")["env"] if e["name"] != "RABBITMQ_URL"]
        ),
    ),
    "Triton readiness on the server-wide endpoint": (
        inv.triton_probe_problems,
        lambda d: _container(d, "Deployment", "mlops-triton", "triton")["readinessProbe"]["httpGet"].update(
            {"path": "/v2/health/ready"}
        ),
    ),
    "dashboard edited in the chart only": (
        inv.observability_problems,
        lambda d: next(c for c in d if c["kind"] == "ConfigMap" and "grafana_dashboard" in c["metadata"]["labels"])[
            "data"
        ].update({"bff.json": "{}"}),
    ),
    "serving behind the trainer": (
        inv.sync_wave_problems,
        lambda d: _get(d, "Deployment", "mlops-triton")["metadata"]["annotations"].update({inv.SYNC_WAVE: "4"}),
    ),
    "trainer Job recreated at every sync": (
        inv.sync_wave_problems,
        lambda d: next(
            j for j in d if j["kind"] == "Job" and j["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
        )["metadata"]["annotations"].update({inv.HOOK_DELETE_POLICY: "BeforeHookCreation"}),
    ),
    "feature pipeline Job a plain resource": (
        inv.sync_wave_problems,
        lambda d: next(
            j
            for j in d
            if j["kind"] == "Job" and j["metadata"]["labels"]["app.kubernetes.io/component"] == "feature-pipeline"
        )["metadata"]["annotations"].pop(inv.HOOK),
    ),
    "PDB that lets a drain evict the only pod": (
        inv.availability_problems,
        lambda d: _get(d, "HorizontalPodAutoscaler", "mlops-bff")["spec"].update(minReplicas=1),
    ),
    "PDB that blocks every drain": (
        inv.availability_problems,
        lambda d: _get(d, "PodDisruptionBudget", "mlops-bff")["spec"].update(maxUnavailable=0),
    ),
    "topology spread counting another component": (
        inv.availability_problems,
        lambda d: _get(d, "Deployment", "mlops-triton")["spec"]["template"]["spec"]["topologySpreadConstraints"][0][
            "labelSelector"
        ]["matchLabels"].update({"app.kubernetes.io/component": "bff"}),
    ),
    "CronJob without a starting deadline": (
        inv.cronjob_problems,
        lambda d: _get(d, "CronJob", "mlops-trainer-retrain")["spec"].pop("startingDeadlineSeconds"),
    ),
    "dashboard uid shared by every environment": (
        inv.observability_problems,
        lambda d: next(c for c in d if c["kind"] == "ConfigMap" and "bff.json" in c.get("data", {}))["data"].update(
            {"bff.json": (REPO / "observability" / "dashboards" / "bff.json").read_text()}
        ),
    ),
    "trainer before the feature pipeline": (
        inv.sync_wave_problems,
        lambda d: next(
            j for j in d if j["kind"] == "Job" and j["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
        )["metadata"]["annotations"].update({inv.SYNC_WAVE: "1"}),
    ),
    "latest image": (
        inv.image_problems,
        lambda d: _container(d, "Deployment", "mlops-bff", "bff").update(image="registry.example.com/mlops-bff:latest"),
    ),
    "BFF grace period shorter than its shutdown": (
        inv.bff_shutdown_problems,
        lambda d: _get(d, "Deployment", "mlops-bff")["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds=30
        ),
    ),
    "drain budget raised past the grace period": (
        inv.bff_shutdown_problems,
        lambda d: next(
            e for e in _container(d, "Deployment", "mlops-bff", "bff")["env"] if e["name"] == "LOG_DRAIN_TIMEOUT_S"
        ).update(value="60"),
    ),
    "token for a pod without a Role": (
        inv.rbac_problems,
        lambda d: _get(d, "Deployment", "mlops-log-worker")["spec"]["template"]["spec"].update(
            automountServiceAccountToken=True
        ),
    ),
    "ClusterRole in the release": (
        inv.rbac_problems,
        lambda d: d.append(
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "x"}}
        ),
    ),
    "monitor run as two replicas": (
        inv.monitor_problems,
        lambda d: _get(d, "Deployment", "mlops-monitor")["spec"].update(replicas=2),
    ),
    "monitor rolled out side by side": (
        inv.monitor_problems,
        lambda d: _get(d, "Deployment", "mlops-monitor")["spec"].update(strategy={"type": "RollingUpdate"}),
    ),
    "monitor gets a token without retraining": (
        inv.monitor_problems,
        lambda d: _get(d, "Deployment", "mlops-monitor")["spec"]["template"]["spec"].update(
            automountServiceAccountToken=True
        ),
    ),
    "BFF without a preStop sleep": (
        inv.bff_shutdown_problems,
        lambda d: _container(d, "Deployment", "mlops-bff", "bff").pop("lifecycle"),
    ),
    "spool volume without a size limit": (
        inv.bff_shutdown_problems,
        lambda d: next(
            v for v in _get(d, "Deployment", "mlops-bff")["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v
        )["emptyDir"].pop("sizeLimit"),
    ),
    "spool limit raised past the volume": (
        inv.bff_shutdown_problems,
        lambda d: next(
            e for e in _container(d, "Deployment", "mlops-bff", "bff")["env"] if e["name"] == "LOG_SPOOL_MAX_BYTES"
        ).update(value=str(1 << 30)),
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_broken_render_is_reported(rendered: dict[str, list[Doc]], breakage: str) -> None:
    check, mutate = BREAKAGES[breakage]
    assert check(rendered["01-default"]) == []
    assert check(_broken(rendered, mutate)), f"{check.__name__} did not notice: {breakage}"


def test_every_service_with_settings_is_deployed(rendered: dict[str, list[Doc]], render) -> None:
    """A new service package with a settings.py needs a workload in the chart (devstack, dashboards and
    mlops_cli, the local stack, its pictures of the dashboards and the operator's CLI, are local only);
    the job worker where jobs are on."""
    with_jobs = render({"jobs.enabled": True, "bff.apiKeys.required": True, "bff.apiKeys.existingSecret": "keys"})
    deployed = {
        python_service(c)
        for docs in (rendered["01-default"], with_jobs)
        for _, t in pod_templates(docs)
        for c in inv.containers(t)
    }
    local_only = {"mlops_common", "devstack", "dashboards", "mlops_cli"}
    services = {p.parent.name for p in (REPO / "services").glob("*/settings.py")} - local_only
    assert services <= deployed, services - deployed


def test_broken_template_is_reported(tmp_path: Path) -> None:
    """End to end: a template edited to probe a port the container does not have fails the invariants."""
    charts = tmp_path / "charts"
    shutil.copytree(REPO / "charts", charts, symlinks=True, ignore=shutil.ignore_patterns("*.tgz", "Chart.lock"))
    shutil.copytree(REPO / "observability", tmp_path / "observability")
    # The targets of the chart's other symlink (files/training-profiles.yaml).
    (tmp_path / "services/trainer").mkdir(parents=True)
    shutil.copy2(REPO / "services/trainer/profiles.yaml", tmp_path / "services/trainer/profiles.yaml")
    template = charts / "mlops/templates/bff/deployment.yaml"
    template.write_text(
        template.read_text().replace("{path: /health/ready, port: http}", "{path: /health/ready, port: web}")
    )
    helm_dependency_build(charts / "mlops")
    docs = helm_template(chart=charts / "mlops", value_files=[CI_VALUES[0]])
    assert inv.named_port_problems(docs) == [
        "Deployment/mlops-bff/bff: readinessProbe port 'web' is not a container port"
    ]
