"""Rendering and validation helpers shared by tests/charts and tests/argocd.

Every external tool comes from `make k8s-tools` (tools/install-k8s-tools.sh) under .tools/; a
missing tool fails the test that needs it, with that hint, rather than skipping it.
"""

import fcntl
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
CHART = REPO / "charts" / "mlops"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "mlops"
NAMESPACE = "mlops"
# The oldest Kubernetes the platform supports; rendered objects are validated against its schemas.
KUBE_VERSION = "1.31.0"
INSTALL_HINT = "run `make k8s-tools` (tools/install-k8s-tools.sh) to install it into .tools/"

Doc = dict[str, Any]


def tool(name: str) -> Path:
    path = TOOLS / "bin" / name
    if not path.exists():
        pytest.fail(f"{name} is missing ({path}): {INSTALL_HINT}")
    return path


def tool_python(venv: str) -> Path:
    path = TOOLS / venv / "bin" / "python"
    if not path.exists():
        pytest.fail(f"{path} is missing: {INSTALL_HINT}")
    return path


def node_modules() -> Path:
    path = TOOLS / "node" / "node_modules"
    if not (path / "@kubernetes-models").is_dir():
        pytest.fail(f"the CRD validators are missing ({path}): {INSTALL_HINT}")
    return path


def run(cmd: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs)


class HelmError(Exception):
    pass


def helm_dependency_build(chart: Path = CHART) -> None:
    """Package the chart's file:// subcharts into ``<chart>/charts/``, unless the packages there are newer
    than every file they are made of. The test run's worker processes share the folder and helm rewrites it:
    one process builds while holding a lock, and the others then find the packages current (rebuilt while
    another process renders, they would change under it)."""
    lock_name = f"helm-dependency-build-{hashlib.sha1(bytes(chart)).hexdigest()[:12]}.lock"
    with open(Path(tempfile.gettempdir()) / lock_name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _packages_current(chart):
            return
        result = run([tool("helm"), "dependency", "build", chart])
    if result.returncode:
        raise HelmError(f"helm dependency build {chart} failed:\n{result.stderr}")


def _packages_current(chart: Path) -> bool:
    metadata = chart / "Chart.yaml"
    for dependency in yaml.safe_load(metadata.read_text()).get("dependencies", []):
        package = chart / "charts" / f"{dependency['name']}-{dependency['version']}.tgz"
        source = (chart / dependency["repository"].removeprefix("file://")).resolve()
        if not package.exists():
            return False
        sources = [metadata, *(path for path in source.rglob("*") if path.is_file())]
        if package.stat().st_mtime < max(path.stat().st_mtime for path in sources):
            return False
    return True


def helm_template_text(
    chart: Path = CHART,
    value_files: list[Path] = (),  # type: ignore[assignment]
    set_values: dict[str, str] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> str:
    cmd: list[str | Path] = [tool("helm"), "template", release, chart, "--namespace", namespace]
    cmd += ["--kube-version", KUBE_VERSION]
    for path in value_files:
        cmd += ["--values", path]
    for key, value in (set_values or {}).items():
        cmd += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    result = run(cmd)
    if result.returncode:
        raise HelmError(result.stderr.strip())
    return result.stdout


def load_documents(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(*args: Any, **kwargs: Any) -> list[Doc]:
    return load_documents(helm_template_text(*args, **kwargs))


def object_id(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def validate_builtin_kinds(rendered: dict[str, list[Doc]]) -> list[str]:
    """Strict schema validation (unknown fields rejected) of every built-in kind, Kubernetes KUBE_VERSION.

    `rendered` maps a label (scenario) to its objects; objects of other API groups are left to
    validate_custom_resources. One process for all scenarios: loading the schemas is the slow part.
    """
    script = Path(__file__).with_name("validate_builtin_kinds.py")
    payload = json.dumps({"kubernetes_version": KUBE_VERSION, "documents": rendered})
    result = run([tool_python("k8s-venv"), script], input=payload)
    if result.returncode:
        pytest.fail(f"kubernetes-validate driver failed:\n{result.stderr}")
    return json.loads(result.stdout)


def validate_custom_resources(rendered: dict[str, list[Doc]]) -> list[str]:
    """ServiceMonitor, PrometheusRule, Application and AppProject against their CRD schemas (node)."""
    script = Path(__file__).with_name("validate_crds.mjs")
    payload = json.dumps({"nodeModules": str(node_modules()), "documents": rendered})
    result = run(["node", script], input=payload)
    if result.returncode:
        pytest.fail(f"CRD validator failed:\n{result.stderr}")
    return json.loads(result.stdout)


def pod_templates(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    """(owner, pod template) of every workload: Deployment, StatefulSet, Job, CronJob."""
    templates = []
    for doc in docs:
        spec = doc.get("spec", {})
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            templates.append((doc, spec["template"]))
        elif doc["kind"] == "CronJob":
            templates.append((doc, spec["jobTemplate"]["spec"]["template"]))
    return templates


def containers(pod_template: Doc) -> list[Doc]:
    spec = pod_template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def python_service(container: Doc) -> str | None:
    """The platform service a container runs (`python -m <service>` or `python -m <service>.<tool>`), if any."""
    argv = container.get("command", []) + container.get("args", [])
    if len(argv) >= 3 and argv[0] == "python" and argv[1] == "-m":
        return str(argv[2]).split(".")[0]
    return None


def repository_files() -> list[str]:
    """The repository's files as git sees them: tracked plus untracked-but-not-ignored (the lead commits later)."""
    result = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO)
    assert result.returncode == 0, result.stderr
    paths = (name for name in result.stdout.split("\0") if name)
    # Files deleted in the working tree but still in the index are gone from the snapshot too.
    return sorted(name for name in paths if (REPO / name).is_symlink() or (REPO / name).exists())


def git(cwd: Path, *args: str) -> str:
    result = run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *args], cwd=cwd)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def commit_working_tree(destination: Path) -> str:
    """A git repository at `destination` whose one commit holds the working tree's files; returns its sha."""
    import shutil

    for name in repository_files():
        source, target = REPO / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        else:
            shutil.copy2(source, target)
    git(destination, "init", "--quiet", "--initial-branch=main")
    git(destination, "add", "--all")
    git(destination, "commit", "--quiet", "--message", "snapshot of the working tree")
    return git(destination, "rev-parse", "HEAD")
