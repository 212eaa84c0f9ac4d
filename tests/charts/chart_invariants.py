"""Cross-object rules of the rendered chart that no schema can see.

Each check takes the rendered objects of one scenario and returns a list of problems (empty: fine),
so the tests can assert on real renders and, on purpose, on broken ones.
"""

import importlib
import json
import re
import string
import typing
from collections import Counter
from pathlib import Path
from typing import Any

from chart_tools import REPO, Doc, containers, object_id, pod_templates, python_service

# Selectors use only these labels (house style: name/instance/component).
SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob"}
# Defaults that only make sense on a developer's machine: a cluster must set these fields.
LOCAL_ONLY_DEFAULT = re.compile(r"127\.0\.0\.1|localhost|/\.stack/")
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
# What the Secrets hold where a plain string would not parse: the BFF's API_KEYS is a JSON object of hashes.
SECRET_STAND_INS = {"API_KEYS": '{"stand-in": "sha256:' + "0" * 64 + '"}'}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _pod_label_sets(docs: list[Doc]) -> list[tuple[str, dict[str, str]]]:
    return [(object_id(owner), template["metadata"].get("labels", {})) for owner, template in pod_templates(docs)]


def selector_problems(docs: list[Doc]) -> list[str]:
    """Workload selectors match their own pods; Services, PDBs, NetworkPolicies and ServiceMonitors select something."""
    problems = []
    pods = _pod_label_sets(docs)
    services = [d for d in docs if d["kind"] == "Service"]
    for doc in docs:
        kind, spec = doc["kind"], doc.get("spec", {})
        selector = None
        if kind in ("Deployment", "StatefulSet"):
            selector = spec["selector"]["matchLabels"]
            if not _matches(selector, spec["template"]["metadata"]["labels"]):
                problems.append(f"{object_id(doc)}: selector {selector} does not match its pod labels")
        elif kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
            selector = spec.get("selector", {}) if kind == "Service" else None
            if kind == "PodDisruptionBudget":
                selector = spec["selector"]["matchLabels"]
            if kind == "NetworkPolicy":
                selector = spec["podSelector"].get("matchLabels", {})
            if not any(_matches(selector, labels) for _, labels in pods):
                problems.append(f"{object_id(doc)}: selector {selector} matches no pod")
        elif kind == "ServiceMonitor":
            selector = spec["selector"]["matchLabels"]
            if not any(_matches(selector, s["metadata"]["labels"]) for s in services):
                problems.append(f"{object_id(doc)}: selector {selector} matches no Service")
        if selector is not None and kind != "NetworkPolicy" and set(selector) - SELECTOR_KEYS:
            problems.append(f"{object_id(doc)}: selector uses {sorted(set(selector) - SELECTOR_KEYS)}")
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(direction, []):
                for peer in rule.get(peers_key, []):
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        selector = peer["podSelector"].get("matchLabels", {})
                        if not any(_matches(selector, labels) for _, labels in pods):
                            problems.append(f"{object_id(policy)}: {direction} peer {selector} matches no pod")
    return problems


def _container_ports(template: Doc) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in containers(template) for p in c.get("ports", []) if "name" in p}


def named_port_problems(docs: list[Doc]) -> list[str]:
    """Probe ports, Service targetPorts, ServiceMonitor and Ingress ports name ports that exist."""
    problems = []
    for owner, template in pod_templates(docs):
        for container in containers(template):
            own_ports = {p.get("name") for p in container.get("ports", [])}
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(probe_name, {})
                port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in own_ports:
                    problems.append(
                        f"{object_id(owner)}/{container['name']}: {probe_name} port {port!r} is not a container port"
                    )
    templates = pod_templates(docs)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for service in services.values():
        selected = [
            t for _, t in templates if _matches(service["spec"].get("selector", {}), t["metadata"].get("labels", {}))
        ]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and not all(target in _container_ports(t) for t in selected):
                problems.append(
                    f"{object_id(service)}: targetPort {target!r} is not a named port of every selected pod"
                )
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selected = [
            s
            for s in services.values()
            if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        for endpoint in monitor["spec"]["endpoints"]:
            for service in selected:
                if endpoint["port"] not in {p["name"] for p in service["spec"]["ports"]}:
                    problems.append(
                        f"{object_id(monitor)}: port {endpoint['port']!r} is not a port of {object_id(service)}"
                    )
    for ingress in (d for d in docs if d["kind"] == "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = services.get(backend["name"])
                if service is None:
                    problems.append(f"{object_id(ingress)}: backend Service {backend['name']!r} does not exist")
                elif backend["port"].get("name") not in {p["name"] for p in service["spec"]["ports"]}:
                    problems.append(
                        f"{object_id(ingress)}: backend port {backend['port']} is not a port of {object_id(service)}"
                    )
    return problems


def _opens_to_other_namespaces(rule: Doc, port: int, port_name: str) -> bool:
    """An ingress rule lets a peer outside the release's pods (Prometheus) reach the port."""
    ports = {p.get("port") for p in rule.get("ports", [])}
    reaches_port = not ports or port in ports or port_name in ports
    return reaches_port and ("from" not in rule or any("namespaceSelector" in peer for peer in rule["from"]))


def scrape_problems(docs: list[Doc]) -> list[str]:
    """With NetworkPolicies on, every port a ServiceMonitor scrapes is open to Prometheus' namespace."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if not policies:
        return []
    problems = []
    templates = pod_templates(docs)
    services = [d for d in docs if d["kind"] == "Service"]
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        for service in services:
            if not _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]):
                continue
            for endpoint in monitor["spec"]["endpoints"]:
                target = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])["targetPort"]
                for owner, template in templates:
                    labels = template["metadata"].get("labels", {})
                    if not _matches(service["spec"].get("selector", {}), labels):
                        continue
                    port = _container_ports(template).get(target, target)
                    if not any(
                        _matches(policy["spec"]["podSelector"].get("matchLabels", {}), labels)
                        and any(_opens_to_other_namespaces(r, port, target) for r in policy["spec"].get("ingress", []))
                        for policy in policies
                    ):
                        problems.append(
                            f"{object_id(monitor)}: port {endpoint['port']} ({port}) of {object_id(owner)} "
                            "is closed to Prometheus by the NetworkPolicies"
                        )
    return problems


def hpa_problems(docs: list[Doc]) -> list[str]:
    """HPAs target existing Deployments, which leave their replica count to the HPA."""
    problems = []
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        targets = [d for d in docs if d["kind"] == ref["kind"] and d["metadata"]["name"] == ref["name"]]
        if not targets:
            problems.append(f"{object_id(hpa)}: scale target {ref['kind']}/{ref['name']} does not exist")
        elif targets[0]["apiVersion"] != ref["apiVersion"]:
            problems.append(
                f"{object_id(hpa)}: scale target apiVersion {ref['apiVersion']} != {targets[0]['apiVersion']}"
            )
        elif "replicas" in targets[0]["spec"]:
            problems.append(f"{object_id(targets[0])}: sets spec.replicas although {object_id(hpa)} owns it")
        if hpa["spec"]["minReplicas"] > hpa["spec"]["maxReplicas"]:
            problems.append(f"{object_id(hpa)}: minReplicas > maxReplicas")
    return problems


def keda_problems(docs: list[Doc]) -> list[str]:
    """KEDA ScaledObjects scale existing Deployments that no HPA also scales and that leave their replicas
    to it; every trigger's authentication exists; the RabbitMQ trigger watches the queue the log worker
    consumes, with the broker URL its RABBITMQ_URL comes from; Prometheus triggers ask for the release's
    own Triton series (its namespace and the Service a ServiceMonitor scrapes)."""
    problems = []
    by_id = {object_id(d): d for d in docs}
    hpa_targets = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    monitored = {
        s["metadata"]["name"]
        for s in docs
        if s["kind"] == "Service"
        and any(
            m["kind"] == "ServiceMonitor" and _matches(m["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
            for m in docs
        )
    }
    for scaled in (d for d in docs if d["kind"] == "ScaledObject"):
        where, spec = object_id(scaled), scaled["spec"]
        target = by_id.get(f"Deployment/{spec['scaleTargetRef']['name']}")
        if target is None:
            problems.append(
                f"{where}: scale target {spec['scaleTargetRef']['name']} is not a Deployment of the release"
            )
            continue
        if "replicas" in target["spec"]:
            problems.append(f"{object_id(target)}: sets spec.replicas although {where} owns it")
        if target["metadata"]["name"] in hpa_targets:
            problems.append(f"{where}: an HPA scales {object_id(target)} too")
        if not spec["minReplicaCount"] <= spec["maxReplicaCount"]:
            problems.append(f"{where}: minReplicaCount > maxReplicaCount")
        if "cpu" not in {t["type"] for t in spec["triggers"]}:
            problems.append(f"{where}: no CPU trigger to fall back on")
        container = target["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container.get("env", [])}
        for trigger in spec["triggers"]:
            ref = trigger.get("authenticationRef", {}).get("name")
            if ref and f"TriggerAuthentication/{ref}" not in by_id:
                problems.append(f"{where}: authentication {ref} does not exist")
            if trigger["type"] == "rabbitmq":
                queue = env.get("INFERENCE_LOG_QUEUE", {}).get("value") or _settings_default(
                    "log_worker", "inference_log_queue"
                )
                if trigger["metadata"].get("queueName") != queue:
                    problems.append(
                        f"{where}: watches {trigger['metadata'].get('queueName')!r}, the worker consumes {queue!r}"
                    )
                auth = by_id.get(f"TriggerAuthentication/{ref}", {}).get("spec", {})
                hosts = [r for r in auth.get("secretTargetRef", []) if r["parameter"] == "host"]
                url = env.get("RABBITMQ_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
                if [(h["name"], h["key"]) for h in hosts] != [(url.get("name"), url.get("key"))]:
                    problems.append(f"{where}: the broker's address is not the Secret key of the worker's RABBITMQ_URL")
            if trigger["type"] == "prometheus":
                query = trigger["metadata"]["query"]
                namespace = scaled["metadata"]["namespace"]
                for selector in re.findall(r"\{([^}]*)\}", query):
                    labels = dict(re.findall(r'(\w+)="([^"]*)"', selector))
                    if labels.get("namespace") != namespace or labels.get("job") not in monitored:
                        problems.append(f"{where}: {trigger.get('name')} reads series of {labels}, not this release's")
    return problems


def _settings_default(service: str, field: str) -> Any:
    return settings_class(service).model_fields[field].default


def settings_class(service: str) -> Any:
    return importlib.import_module(f"{service}.settings").Settings


def _env_names(field_name: str, field: Any) -> set[str]:
    aliases = {a for a in (field.alias, field.validation_alias) if isinstance(a, str)}
    return {name.upper() for name in aliases | {field_name}}


def _plain(value: Any) -> str:
    """A default as text, secrets included (SecretStr hides its value from str())."""
    return str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)


def _feast_placeholders(config_file: str) -> set[str]:
    text = (REPO / "feature_repo" / config_file).read_text()
    return {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)} - {None}


def argument_only_env(container: Doc) -> set[str]:
    """Variables from the downward API (fieldRef) that the container's command or args name as `$(NAME)`:
    Kubernetes expands them into the arguments (the batch-scoring job's `--job-id=$(K8S_JOB_NAME)`), no
    settings class reads them."""
    argv = " ".join(str(a) for a in container.get("command", []) + container.get("args", []))
    return {
        e["name"]
        for e in container.get("env", [])
        if "fieldRef" in e.get("valueFrom", {}) and f"$({e['name']})" in argv
    }


def env_problems(docs: list[Doc]) -> list[str]:
    """Every variable the chart sets is a field of the service's Settings class (or a downward-API value
    expanded into its arguments), parses as that field, and every field a cluster needs is set: required
    ones, those whose default points at a developer's machine, and the Feast placeholders of the
    cluster's feature_store.yaml."""
    problems = []
    for owner, template in pod_templates(docs):
        for container in containers(template):
            service = python_service(container)
            if service is None:
                continue
            where = f"{object_id(owner)}/{container['name']}"
            if not (REPO / "services" / service / "settings.py").exists():
                problems.append(f"{where}: runs {service!r}, which has no services/{service}/settings.py")
                continue
            settings = settings_class(service)
            arguments_only = argument_only_env(container)
            env = [e for e in container.get("env", []) if e["name"] not in arguments_only]
            counts = Counter(e["name"] for e in env)
            problems += [f"{where}: {name} is set {n} times" for name, n in counts.items() if n > 1]
            field_of = {
                name: field_name
                for field_name, field in settings.model_fields.items()
                for name in _env_names(field_name, field)
            }
            values: dict[str, Any] = {}
            for var in env:
                if var["name"] not in field_of:
                    problems.append(f"{where}: sets {var['name']}, which {service}'s Settings does not read")
                    continue
                # A Secret's content is unknown here; a value of the right shape stands in for it.
                stand_in = SECRET_STAND_INS.get(var["name"], "secret-from-cluster")
                text = var.get("value", stand_in)
                field_name = field_of[var["name"]]
                # pydantic-settings decodes JSON for dict and list fields read from the environment.
                complex_field = typing.get_origin(settings.model_fields[field_name].annotation) in (dict, list)
                values[field_name] = json.loads(text) if complex_field else text
            try:
                settings(**values)
            except Exception as err:
                problems.append(f"{where}: the env does not parse as {service}'s Settings: {err}")
            feast_needed: set[str] = set()
            if "feast_config_file" in settings.model_fields:
                config_file = str(values.get("feast_config_file") or settings.model_fields["feast_config_file"].default)
                if not (REPO / "feature_repo" / config_file).is_file():
                    problems.append(f"{where}: FEAST_CONFIG_FILE {config_file} is not a file in feature_repo/")
                else:
                    feast_needed = _feast_placeholders(config_file)
            for field_name, field in settings.model_fields.items():
                names = _env_names(field_name, field)
                if names & counts.keys():
                    continue
                if field.is_required():
                    problems.append(f"{where}: required setting {field_name.upper()} is not set")
                elif field_name.startswith("feast_"):
                    if names & feast_needed:
                        problems.append(
                            f"{where}: {field_name.upper()} (a placeholder of the cluster's Feast config) is not set"
                        )
                elif LOCAL_ONLY_DEFAULT.search(_plain(field.get_default(call_default_factory=True))):
                    problems.append(
                        f"{where}: {field_name.upper()} is not set and its default points at a developer machine"
                    )
    return problems


def env_value(container: Doc, name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def setting(container: Doc, service: str, field_name: str) -> Any:
    """The value a service will see for a field: the chart's env, else the Settings default."""
    value = env_value(container, field_name.upper())
    return value if value is not None else settings_class(service).model_fields[field_name].default


def triton_probe_problems(docs: list[Doc]) -> list[str]:
    """Triton is probed on its real health API, and readiness asks for the model model sync loads."""
    problems = []
    for owner, template in pod_templates(docs):
        spec_containers = {c["name"]: c for c in containers(template)}
        triton = next((c for c in spec_containers.values() if c.get("command") == ["tritonserver"]), None)
        if triton is None:
            continue
        syncs = [c for c in spec_containers.values() if python_service(c) == "model_sync"]
        if not syncs:
            problems.append(f"{object_id(owner)}: Triton without model sync")
            continue
        model = setting(syncs[0], "model_sync", "triton_model_name")
        expected = {
            "livenessProbe": "/v2/health/live",
            "startupProbe": "/v2/health/live",
            # Per-model readiness: the server-wide /v2/health/ready flaps on every version switch.
            "readinessProbe": f"/v2/models/{model}/ready",
        }
        for probe, path in expected.items():
            actual = triton.get(probe, {}).get("httpGet", {}).get("path")
            if actual != path:
                problems.append(f"{object_id(owner)}: Triton {probe} path {actual!r}, expected {path!r}")
        if f"--load-model={model}" not in triton.get("args", []):
            problems.append(f"{object_id(owner)}: Triton does not load {model!r} at startup")
        ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
        for sync in syncs:
            for field_name, port_name in (("triton_http_url", "http"), ("triton_grpc_url", "grpc")):
                url = str(setting(sync, "model_sync", field_name))
                if not url.endswith(f":{ports[port_name]}"):
                    problems.append(
                        f"{object_id(owner)}/{sync['name']}: {field_name.upper()} {url} is not Triton's {port_name}"
                    )
    for owner, template in pod_templates(docs):
        for container in containers(template):
            if python_service(container) == "bff":
                model = setting(container, "bff", "triton_model_name")
                served = {
                    setting(c, "model_sync", "triton_model_name")
                    for _, t in pod_templates(docs)
                    for c in containers(t)
                    if python_service(c) == "model_sync"
                }
                if served and model not in served:
                    problems.append(
                        f"{object_id(owner)}: the BFF asks Triton for {model!r}, model sync serves {served}"
                    )
    return problems


def metrics_port_problems(docs: list[Doc]) -> list[str]:
    """Services whose metrics live on a prometheus_client port are probed and scraped on that port."""
    problems = []
    for owner, template in pod_templates(docs):
        for container in containers(template):
            service = python_service(container)
            field_name = {
                "model_sync": "model_sync_metrics_port",
                "log_worker": "log_worker_metrics_port",
                "monitor": "monitor_metrics_port",
                "bff": "bff_port",
            }.get(service or "")
            if (
                field_name is None
                or owner["kind"] != "Deployment"
                or container in template["spec"].get("initContainers", [])
            ):
                continue
            port = int(setting(container, service, field_name))
            declared = {p["containerPort"] for p in container.get("ports", [])}
            if port not in declared:
                problems.append(
                    f"{object_id(owner)}/{container['name']}: {field_name.upper()}={port} is not in {declared}"
                )
    return problems


def http_probe_paths(docs: list[Doc], service: str) -> set[str]:
    return {
        container[probe]["httpGet"]["path"]
        for _, template in pod_templates(docs)
        for container in containers(template)
        if python_service(container) == service
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        if "httpGet" in container.get(probe, {})
    }


RUNBOOKS_PATH = "observability/runbooks.md#"


def _runbooks_relative(spec: Doc) -> Doc:
    """A PrometheusRule's spec with each runbook_url back to its repository-relative form (the chart
    prefixes them with `monitoring.prometheusRules.runbookBaseUrl`)."""
    spec = json.loads(json.dumps(spec))
    for group in spec.get("groups", []):
        for rule in group.get("rules", []):
            url = rule.get("annotations", {}).get("runbook_url", "")
            if RUNBOOKS_PATH in url:
                rule["annotations"]["runbook_url"] = RUNBOOKS_PATH + url.rpartition(RUNBOOKS_PATH)[2]
    return spec


def _per_namespace_problems(rendered: Doc, source: Doc, namespaces: set[str]) -> list[str]:
    """A dashboard as the chart renders it is the file's, but for its environment: uid and title name the
    release's namespace, its `namespace` variable starts there. Puts the file's values back into `rendered`."""
    if len(namespaces) != 1:
        return [f"no single release namespace among the Deployments: {sorted(namespaces)}"]
    [namespace] = namespaces
    problems = []
    uid = f"{source['uid']}-{namespace}"
    if not (rendered.get("uid") == uid or (len(uid) > 40 and rendered.get("uid", "").startswith(uid[:20]))):
        problems.append(f"uid {rendered.get('uid')!r} does not name the namespace {namespace}")
    if len(rendered.get("uid", "")) > 40:
        problems.append(f"uid {rendered.get('uid')!r} is longer than Grafana's 40 characters")
    if rendered.get("title") != f"{source['title']} ({namespace})":
        problems.append(f"title {rendered.get('title')!r} does not name the namespace {namespace}")
    variables = {v["name"]: v for v in rendered.get("templating", {}).get("list", [])}
    current = variables.get("namespace", {}).get("current", {})
    if current.get("value") != namespace:
        problems.append(f"the namespace variable starts on {current.get('value')!r}, not {namespace}")
    rendered["uid"], rendered["title"] = source["uid"], source["title"]
    for variable in rendered.get("templating", {}).get("list", []):
        if variable["name"] == "namespace":
            variable["current"] = next(v for v in source["templating"]["list"] if v["name"] == "namespace")["current"]
    return problems


def observability_problems(docs: list[Doc], observability: Path = REPO / "observability") -> list[str]:
    """The dashboard ConfigMaps and PrometheusRules hold exactly the files of observability/."""
    import yaml

    problems = []
    dashboards = {
        key: value
        for d in docs
        if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]
        for key, value in d["data"].items()
    }
    files = {p.name: p.read_text() for p in sorted((observability / "dashboards").glob("*.json"))}
    if dashboards and dashboards.keys() != files.keys():
        problems.append(f"dashboard ConfigMaps hold {sorted(dashboards)}, observability/dashboards has {sorted(files)}")
    release_namespaces = {d["metadata"]["namespace"] for d in docs if d["kind"] == "Deployment"}
    for name in sorted(dashboards.keys() & files.keys()):
        rendered, source = json.loads(dashboards[name]), json.loads(files[name])
        problems += [f"dashboard {name}: {p}" for p in _per_namespace_problems(rendered, source, release_namespaces)]
        if rendered != source:
            problems.append(f"dashboard {name} differs from observability/dashboards/{name}")
    rules = {d["metadata"]["name"]: _runbooks_relative(d["spec"]) for d in docs if d["kind"] == "PrometheusRule"}
    alert_files = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((observability / "alerts").glob("*.yaml"))}
    if rules:
        specs = list(rules.values())
        for name, content in alert_files.items():
            if content not in specs:
                problems.append(f"no PrometheusRule holds observability/alerts/{name}.yaml as it is")
        if len(specs) != len(alert_files):
            problems.append(f"{len(specs)} PrometheusRules for {len(alert_files)} alert files")
    return problems


def wave(doc: Doc) -> int:
    return int(doc["metadata"].get("annotations", {}).get(SYNC_WAVE, 0))


HOOK = "argocd.argoproj.io/hook"
HOOK_DELETE_POLICY = "argocd.argoproj.io/hook-delete-policy"


def sync_wave_problems(docs: list[Doc]) -> list[str]:
    """Argo CD applies infrastructure, then buckets, then the feature pipeline, then the trainer; serving
    comes no earlier than the trainer (its pods wait for the champion) and never behind it.

    The feature-pipeline and trainer Jobs are named Sync hooks that Argo CD creates once and keeps
    (delete policy HookFailed only: a succeeded run stands, a failed one is created again at the next sync)."""

    def waves(predicate: Any) -> set[int]:
        return {wave(d) for d in docs if predicate(d)}

    def component(d: Doc) -> str:
        return d["metadata"]["labels"].get("app.kubernetes.io/component", "")

    def one_off(d: Doc) -> bool:
        return d["kind"] == "Job" and component(d) in ("feature-pipeline", "trainer")

    stages = {
        "infrastructure": waves(
            lambda d: (
                d["kind"] in ("StatefulSet", "Deployment")
                and d["metadata"]["labels"]["app.kubernetes.io/name"] not in ("mlops", "mlflow")
            )
        ),
        "MLflow schema migration": waves(lambda d: d["kind"] == "Job" and component(d) == "model-registry-migration"),
        "MLflow servers": waves(lambda d: d["kind"] == "Deployment" and component(d) == "model-registry"),
        "buckets": waves(lambda d: d["kind"] == "Job" and component(d) == "bucket-provisioning"),
        "data bootstrap": waves(lambda d: d["kind"] == "Job" and component(d) == "data-bootstrap"),
        "feature pipeline": waves(lambda d: d["kind"] == "Job" and component(d) == "feature-pipeline"),
        "trainer": waves(lambda d: d["kind"] == "Job" and component(d) == "trainer"),
    }
    # (earlier, later, may share a wave): the migration retries until PostgreSQL answers, so it may start beside it.
    order = [
        ("infrastructure", "MLflow schema migration", True),
        ("MLflow schema migration", "MLflow servers", False),
        ("infrastructure", "buckets", False),
        ("buckets", "data bootstrap", False),
        ("data bootstrap", "feature pipeline", False),
        ("buckets", "feature pipeline", False),
        ("MLflow servers", "trainer", False),
        ("feature pipeline", "trainer", False),
    ]
    problems = [
        f"{earlier} (waves {sorted(stages[earlier])}) is not applied before {later} (waves {sorted(stages[later])})"
        for earlier, later, same_wave in order
        if stages[earlier]
        and stages[later]
        and (max(stages[earlier]) > min(stages[later]) if same_wave else max(stages[earlier]) >= min(stages[later]))
    ]
    serving = waves(lambda d: d["kind"] == "Deployment" and component(d) in ("triton", "bff", "log-worker", "monitor"))
    trainer = stages["trainer"]
    if serving and trainer and serving != {max(trainer)}:
        problems.append(f"serving (waves {sorted(serving)}) is not in the trainer's wave {sorted(trainer)}")
    for doc in filter(one_off, docs):
        annotations = doc["metadata"].get("annotations", {})
        if annotations.get(HOOK) != "Sync" or annotations.get(HOOK_DELETE_POLICY) != "HookFailed":
            problems.append(f"{object_id(doc)}: not a Sync hook kept after success and replaced after failure")
    return problems


def _minimum_replicas(docs: list[Doc], deployment: Doc) -> int:
    """The fewest pods a Deployment runs: its autoscaler's minimum (HPA or KEDA ScaledObject), else its replicas."""
    name = deployment["metadata"]["name"]
    for doc in docs:
        if doc["kind"] == "HorizontalPodAutoscaler" and doc["spec"]["scaleTargetRef"]["name"] == name:
            return int(doc["spec"].get("minReplicas", 1))
        if doc["kind"] == "ScaledObject" and doc["spec"]["scaleTargetRef"]["name"] == name:
            return int(doc["spec"].get("minReplicaCount", 0))
    return int(deployment["spec"].get("replicas", 1))


def availability_problems(docs: list[Doc]) -> list[str]:
    """A PodDisruptionBudget never lets a drain take the last pod, nor blocks every drain: it covers a
    Deployment of at least 2 pods and keeps between 1 and all-but-one of them. Topology spread
    constraints count the pods of their own Deployment."""
    problems = []
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        targets = [d for d in deployments if _matches(selector, d["spec"]["template"]["metadata"]["labels"])]
        if len(targets) != 1:
            problems.append(f"{object_id(pdb)}: covers {len(targets)} Deployments")
            continue
        pods = _minimum_replicas(docs, targets[0])
        spec = pdb["spec"]
        down = spec.get("maxUnavailable")
        if isinstance(down, str) and down.endswith("%"):
            down = -(-pods * int(down[:-1]) // 100)
        keep = spec["minAvailable"] if "minAvailable" in spec else pods - int(down)
        if not isinstance(keep, int) or not 1 <= keep <= pods - 1:
            problems.append(f"{object_id(pdb)}: keeps {keep} of at least {pods} pods (needs 1 to {pods - 1})")
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for constraint in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
            if not _matches(constraint.get("labelSelector", {}).get("matchLabels", {"": "none"}), labels):
                problems.append(f"{object_id(deployment)}: a topology spread constraint does not count its own pods")
    return problems


def cronjob_problems(docs: list[Doc]) -> list[str]:
    """Every CronJob has a startingDeadlineSeconds: a missed run is skipped after it (never started hours
    late), and a controller that was down does not count 100 missed runs and stop scheduling it."""
    return [
        f"{object_id(d)}: no positive startingDeadlineSeconds"
        for d in docs
        if d["kind"] == "CronJob" and not d["spec"].get("startingDeadlineSeconds", 0) > 0
    ]


def image_problems(docs: list[Doc]) -> list[str]:
    """Every image names a registry and a pinned tag or digest; none is `latest`."""
    problems = []
    for owner, template in pod_templates(docs):
        for container in containers(template):
            image = container["image"]
            name, _, digest = image.partition("@")
            repository, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "")
            if not (digest or tag) or tag == "latest":
                problems.append(f"{object_id(owner)}/{container['name']}: image {image} is not pinned")
            if "/" not in repository or "." not in repository.split("/")[0]:
                problems.append(f"{object_id(owner)}/{container['name']}: image {image} names no registry")
    return problems


_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_QUANTITY_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_QUANTITY_UNITS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})


def quantity_bytes(quantity: str | int) -> int:
    match = _QUANTITY.match(str(quantity))
    if match is None:
        raise ValueError(f"unsupported quantity {quantity!r}")
    return int(match[1]) * _QUANTITY_UNITS[match[2]]


def _pre_stop_seconds(container: Doc) -> int:
    """Seconds a `sleep N` preStop hook (exec or the native sleep action) holds the container; 0 without one."""
    hook = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    return int(command[1]) if len(command) == 2 and command[0] == "sleep" else 0


# What a BFF needs after its shutdown budgets are spent: closing clients, exiting the interpreter.
BFF_SHUTDOWN_MARGIN_S = 5


def bff_shutdown_problems(docs: list[Doc]) -> list[str]:
    """A BFF pod is taken out of its endpoints before SIGTERM (preStop sleep), its grace period covers
    preStop + uvicorn's graceful shutdown + the inference-log drain + a margin (else the kubelet kills
    it mid-drain), and its spool's emptyDir has a sizeLimit above the spool's byte limit (else the
    spool is unbounded, or the kubelet evicts the pod before the spool refuses records)."""
    problems = []
    for owner, template in pod_templates(docs):
        spec = template["spec"]
        for container in containers(template):
            if python_service(container) != "bff":
                continue
            where = f"{object_id(owner)}/{container['name']}"
            pre_stop = _pre_stop_seconds(container)
            if pre_stop < 1:
                problems.append(f"{where}: no preStop sleep; requests still routed here after SIGTERM fail")
            graceful = float(setting(container, "bff", "bff_graceful_shutdown_s"))
            drain = float(setting(container, "bff", "log_drain_timeout_s"))
            needed = pre_stop + graceful + drain + BFF_SHUTDOWN_MARGIN_S
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace < needed:
                problems.append(
                    f"{where}: terminationGracePeriodSeconds {grace} < preStop {pre_stop} + graceful {graceful:g} "
                    f"+ drain {drain:g} + margin {BFF_SHUTDOWN_MARGIN_S}"
                )
            spool_dir = str(setting(container, "bff", "log_spool_dir"))
            mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == spool_dir), None)
            volume = next((v for v in spec.get("volumes", []) if mount and v["name"] == mount["name"]), None)
            if volume is None:
                problems.append(f"{where}: LOG_SPOOL_DIR {spool_dir} is not a mounted volume")
                continue
            max_bytes = int(setting(container, "bff", "log_spool_max_bytes"))
            segment = int(setting(container, "bff", "log_spool_segment_bytes"))
            size_limit = volume.get("emptyDir", {}).get("sizeLimit")
            if size_limit is None:
                problems.append(f"{where}: the spool volume {volume['name']} has no emptyDir sizeLimit")
            elif quantity_bytes(size_limit) < max_bytes + segment:
                problems.append(
                    f"{where}: spool volume sizeLimit {size_limit} < LOG_SPOOL_MAX_BYTES {max_bytes} + one segment"
                )
    return problems


def namespace_problems(docs: list[Doc], namespace: str) -> list[str]:
    return [
        f"{object_id(d)}: namespace {d['metadata'].get('namespace')!r}, expected {namespace!r}"
        for d in docs
        if d["metadata"].get("namespace") != namespace
    ]


# Rights no Role of the platform may grant: reading credentials, running code in other pods, granting
# rights, acting as someone else.
SENSITIVE_RESOURCES = {"secrets", "pods/exec", "pods/attach", "serviceaccounts/token", "roles", "rolebindings"}
SENSITIVE_VERBS = {"*", "escalate", "bind", "impersonate"}


def _service_account(template: Doc) -> str:
    return template["spec"].get("serviceAccountName") or template["spec"].get("serviceAccount") or "default"


def rbac_problems(docs: list[Doc]) -> list[str]:
    """Only a pod that calls the Kubernetes API gets a service-account token, through a ServiceAccount
    of its own component that a RoleBinding grants a Role of the release; ServiceAccounts never mount
    tokens by default; nothing cluster-wide, no wildcards, no rights to credentials or to grant rights."""
    problems = []
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    problems += [
        f"{object_id(d)}: cluster-wide rights" for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")
    ]
    problems += [
        f"{object_id(d)}: mounts a token into every pod that does not opt out"
        for d in docs
        if d["kind"] == "ServiceAccount" and d.get("automountServiceAccountToken") is not False
    ]
    bound: set[str] = set()
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        ref = binding["roleRef"]
        if ref["kind"] != "Role" or ref["name"] not in roles:
            problems.append(f"{object_id(binding)}: binds {ref['kind']}/{ref['name']}, not a Role of the release")
        for subject in binding.get("subjects", []):
            if subject["kind"] != "ServiceAccount" or subject["name"] not in accounts:
                problems.append(
                    f"{object_id(binding)}: subject {subject['kind']}/{subject['name']} "
                    "is not a ServiceAccount of the release"
                )
            elif subject.get("namespace") != binding["metadata"].get("namespace"):
                problems.append(f"{object_id(binding)}: subject {subject['name']} in another namespace")
            else:
                bound.add(subject["name"])
    for role in roles.values():
        for rule in role.get("rules", []):
            fields = [*rule.get("apiGroups", []), *rule.get("resources", []), *rule.get("verbs", [])]
            if "*" in fields:
                problems.append(f"{object_id(role)}: wildcard in {rule}")
            if SENSITIVE_RESOURCES & set(rule.get("resources", [])) or SENSITIVE_VERBS & set(rule.get("verbs", [])):
                problems.append(f"{object_id(role)}: sensitive rights in {rule}")
    users: dict[str, set[str]] = {}
    for owner, template in pod_templates(docs):
        account = _service_account(template)
        users.setdefault(account, set()).add(
            template["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
        )
        mounts = template["spec"].get("automountServiceAccountToken")
        if mounts is not False and account not in bound:
            problems.append(f"{object_id(owner)}: gets a token for ServiceAccount {account}, which has no Role")
        if mounts is False and account in bound:
            problems.append(f"{object_id(owner)}: ServiceAccount {account} has a Role but the pod mounts no token")
    for account in bound:
        if len(users.get(account, set())) > 1:
            problems.append(f"ServiceAccount/{account} has a Role and runs pods of {sorted(users[account])}")
    return problems


def _env(container: Doc) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def monitor_problems(docs: list[Doc]) -> list[str]:
    """The monitor is a singleton (one replica, Recreate); with RETRAIN_MODE=kubernetes its
    RETRAIN_CRONJOB is the release's retrain CronJob (with a `trainer` container), in its own
    namespace, and its Role reads exactly that CronJob; otherwise it has no token."""
    problems = []
    cronjobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CronJob"}
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    for owner, template in pod_templates(docs):
        for container in containers(template):
            if python_service(container) != "monitor":
                continue
            where = f"{object_id(owner)}/{container['name']}"
            if owner["kind"] != "Deployment" or owner["spec"].get("replicas") != 1:
                problems.append(f"{where}: not a Deployment of exactly one replica")
            elif owner["spec"].get("strategy", {}).get("type") != "Recreate":
                problems.append(f"{where}: a rollout would run two monitors at once (strategy is not Recreate)")
            env = _env(container)
            mode = env.get("RETRAIN_MODE", "off")
            mounts = template["spec"].get("automountServiceAccountToken") is not False
            if mode != "kubernetes":
                if mounts:
                    problems.append(f"{where}: RETRAIN_MODE={mode} but the pod gets a service-account token")
                continue
            name = env.get("RETRAIN_CRONJOB")
            cronjob = cronjobs.get(name or "")
            if cronjob is None:
                problems.append(f"{where}: RETRAIN_CRONJOB {name!r} is not a CronJob of the release")
            elif not any(
                c["name"] == "trainer" for c in containers(cronjob["spec"]["jobTemplate"]["spec"]["template"])
            ):
                problems.append(f"{where}: CronJob {name} has no container named trainer")
            if env.get("RETRAIN_NAMESPACE", owner["metadata"].get("namespace")) != owner["metadata"].get("namespace"):
                problems.append(f"{where}: RETRAIN_NAMESPACE {env.get('RETRAIN_NAMESPACE')} is not its namespace")
            account = _service_account(template)
            granted = [
                rule
                for binding in docs
                if binding["kind"] == "RoleBinding"
                and any(s["kind"] == "ServiceAccount" and s["name"] == account for s in binding.get("subjects", []))
                for rule in roles.get(binding["roleRef"]["name"], {}).get("rules", [])
            ]
            if not any(
                "cronjobs" in rule.get("resources", [])
                and "get" in rule.get("verbs", [])
                and rule.get("resourceNames") == [name]
                for rule in granted
            ):
                problems.append(f"{where}: its Role does not let it read CronJob {name} (and only that one)")
            if not any(
                "jobs" in r.get("resources", []) and {"list", "create"} <= set(r.get("verbs", [])) for r in granted
            ):
                problems.append(f"{where}: its Role does not let it list and create Jobs")
    return problems


ALL_CHECKS = (
    selector_problems,
    named_port_problems,
    scrape_problems,
    hpa_problems,
    keda_problems,
    env_problems,
    triton_probe_problems,
    metrics_port_problems,
    observability_problems,
    sync_wave_problems,
    cronjob_problems,
    availability_problems,
    image_problems,
    bff_shutdown_problems,
    rbac_problems,
    monitor_problems,
)


def all_problems(docs: list[Doc], namespace: str) -> list[str]:
    return [p for check in ALL_CHECKS for p in check(docs)] + namespace_problems(docs, namespace)
