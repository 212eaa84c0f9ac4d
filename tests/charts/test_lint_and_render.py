"""helm lint --strict and helm template of every ci/ scenario, then strict schema validation of every
rendered object: built-in kinds against Kubernetes 1.31, custom resources against their CRDs."""

import copy
import re
from pathlib import Path

import pytest
from chart_tools import (
    CHART,
    CI_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    REPO,
    Doc,
    run,
    tool,
    validate_builtin_kinds,
    validate_custom_resources,
)


def test_there_are_ci_scenarios() -> None:
    names = [p.name for p in CI_VALUES]
    assert len(names) >= 6, names
    assert all(name[:2].isdigit() and name[2] == "-" for name in names), names


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict(chart_dependencies: Path, values: Path) -> None:
    result = run([tool("helm"), "lint", "--strict", CHART, "--values", values, "--kube-version", KUBE_VERSION])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_scenario_renders(rendered: dict[str, list[Doc]]) -> None:
    assert set(rendered) == {p.name.removesuffix("-values.yaml") for p in CI_VALUES}
    for name, docs in rendered.items():
        assert docs, f"{name} rendered nothing"
        assert {"Deployment", "Service"} <= {d["kind"] for d in docs}, name


def test_builtin_kinds_are_valid_kubernetes_1_31(rendered: dict[str, list[Doc]]) -> None:
    assert validate_builtin_kinds(rendered) == []


def test_custom_resources_match_their_crds(rendered: dict[str, list[Doc]]) -> None:
    custom = {d["kind"] for docs in rendered.values() for d in docs if "monitoring.coreos.com" in d["apiVersion"]}
    assert custom == {"ServiceMonitor", "PrometheusRule"}
    assert validate_custom_resources(rendered) == []


def test_no_latest_tag_anywhere(rendered: dict[str, list[Doc]]) -> None:
    for name, docs in rendered.items():
        text = str(docs)
        assert ":latest" not in text, name


def _first(docs: list[Doc], kind: str) -> Doc:
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind))


def test_validators_catch_broken_objects(rendered: dict[str, list[Doc]]) -> None:
    """The validation has teeth: an unknown field, a wrong type and a wrong CRD field are reported."""
    docs = rendered["01-default"]
    unknown_field = _first(docs, "Deployment")
    unknown_field["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy2"] = "Always"
    wrong_type = _first(docs, "Service")
    wrong_type["spec"]["ports"][0]["port"] = "eighty"
    problems = validate_builtin_kinds({"broken": [unknown_field, wrong_type]})
    assert len(problems) == 2, problems
    monitor = _first(docs, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = 30
    rule = _first(docs, "PrometheusRule")
    del rule["spec"]["groups"][0]["name"]
    problems = validate_custom_resources({"broken": [monitor, rule]})
    assert len(problems) == 2, problems
    assert validate_custom_resources(
        {"unknown": [{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}]}
    )
    keda = rendered["10-keda"]
    scaled = _first(keda, "ScaledObject")
    scaled["spec"]["minReplicaCount"] = "two"
    auth = _first(keda, "TriggerAuthentication")
    auth["spec"]["secretTargetRef"][0].pop("key")
    problems = validate_custom_resources({"broken": [scaled, auth]})
    assert len(problems) == 2, problems


# What each subchart needs to render on its own (the umbrella passes these down).
SUBCHART_VALUES = {
    "minio": ["auth.rootUser=ci", "auth.rootPassword=ci", "buckets={ci-bucket}"],
    "postgresql": ["auth.password=ci"],
    "rabbitmq": ["auth.password=ci"],
    "redis": ["auth.password=ci"],
    "mlflow": ["global.platformImageTag=0123456789ab"],
}


@pytest.mark.parametrize("subchart", SUBCHART_VALUES)
def test_subchart_lints_on_its_own(subchart: str) -> None:
    values = ["global.imageRegistry=registry.example.com", *SUBCHART_VALUES[subchart]]
    chart = REPO / "charts" / subchart
    result = run([tool("helm"), "lint", "--strict", chart, "--set", ",".join(values), "--kube-version", KUBE_VERSION])
    assert result.returncode == 0, result.stdout + result.stderr


def _undocumented_keys(path: Path) -> list[str]:
    """Keys of a values file without a `# --` comment above them or above one of their parents."""
    undocumented = []
    documented_at: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    comment = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = True
            continue
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        key = re.match(r"([A-Za-z0-9_.-]+):", stripped)
        if stripped.startswith("-") or not key:
            comment = False
            continue
        while documented_at and documented_at[-1][0] >= indent:
            documented_at.pop()
        documented = comment or any(d for _, d in documented_at)
        has_children = stripped.endswith(":")
        if not documented and not has_children:
            undocumented.append(f"{path.relative_to(REPO)}:{number}: {key.group(1)}")
        documented_at.append((indent, documented))
        comment = False
    return undocumented


def test_values_are_documented() -> None:
    files = [CHART / "values.yaml", *(REPO / "charts").glob("*/values.yaml")]
    assert [k for path in sorted(set(files)) for k in _undocumented_keys(path)] == []


YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 160}, document-start: disable,"
    " comments: {min-spaces-from-content: 1}, braces: {max-spaces-inside: 1}, brackets: {max-spaces-inside: 1},"
    " truthy: {check-keys: false}, indentation: {indent-sequences: consistent}}}"
)


def test_yamllint() -> None:
    """The YAML people edit (values, scenarios, Argo CD, alert rules, workflows); templates are not YAML yet."""
    files = [
        *(REPO / "charts").glob("*/values.yaml"),
        *(REPO / "charts").glob("*/Chart.yaml"),
        *(CHART / "ci").glob("*.yaml"),
        *(REPO / "argocd").rglob("*.yaml"),
        *(REPO / "observability" / "alerts").glob("*.yaml"),
        *(REPO / ".github" / "workflows").glob("*.yaml"),
    ]
    result = run([tool("yamllint"), "--strict", "--config-data", YAMLLINT_CONFIG, *sorted(files)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_notes_name_real_services(chart_dependencies: Path, rendered: dict[str, list[Doc]], values: Path) -> None:
    """NOTES.txt renders, and every `svc/<name>` it tells people to port-forward exists in the release."""
    result = run([tool("helm"), "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client",
                  "--values", values])  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.partition("\nNOTES:\n")[2]
    assert "curl -X POST" in notes
    services = {
        d["metadata"]["name"] for d in rendered[values.name.removesuffix("-values.yaml")] if d["kind"] == "Service"
    }
    forwarded = set(re.findall(r"port-forward svc/(\S+)", notes))
    assert forwarded
    assert forwarded <= services
