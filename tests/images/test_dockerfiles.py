"""The service images: one parameterised Dockerfile (services/Dockerfile, build argument SERVICE) for every
deployed service, linted by hadolint, multi-stage from a pinned base, non-root, and carrying exactly the
dependencies the service's code imports."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from chart_tools import REPO, run, tool
from image_tools import normalize, parse_requirements

SERVICES = sorted(p.parent.name for p in (REPO / "services").glob("*/settings.py"))
# mlops_common is a library; devstack runs the local stack, dashboards draws it locally and mlops_cli
# is the operator's command line: no images.
SERVICES = [s for s in SERVICES if s not in ("mlops_common", "devstack", "dashboards", "mlops_cli")]
FIRST_PARTY_ROOTS = [REPO / "services", REPO / "feature_repo", REPO / "data"]
# Imported by code that runs inside Triton's Python backend, which provides it.
PROVIDED_AT_RUN_TIME = {"triton_python_backend_utils"}


SHARED = REPO / "services" / "Dockerfile"


def test_every_service_builds_from_the_one_dockerfile(dockerfiles: list[Path]) -> None:
    assert SERVICES, "no services found"
    assert SHARED in dockerfiles
    per_service = {p for p in dockerfiles if p.parent.parent == REPO / "services"}
    assert per_service == set(), "a service Dockerfile besides services/Dockerfile"
    assert sorted(build_arguments()) == sorted(SERVICES), "the build script builds every service"
    for service in SERVICES:
        assert (REPO / "services" / service / "requirements.txt").is_file(), service
    text = SHARED.read_text()
    assert "COPY services/${SERVICE}/requirements.txt /tmp/requirements.txt" in text
    assert "COPY services/${SERVICE} services/${SERVICE}" in text


def test_hadolint(dockerfiles: list[Path]) -> None:
    result = run([tool("hadolint"), "--failure-threshold", "info", *dockerfiles])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape(dockerfiles: list[Path]) -> None:
    for dockerfile in dockerfiles:
        text = dockerfile.read_text()
        bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
        assert len(bases) >= 2, f"{dockerfile}: not multi-stage"
        for base in bases:
            if base.isidentifier():
                continue  # a previous stage
            tag = base.partition(":")[2]
            assert re.fullmatch(r"\d+(\.\d+){2}[\w.-]*", tag), (
                f"{dockerfile}: base {base} is not pinned to a full version"
            )
        user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
        assert user, f"{dockerfile}: no USER"
        assert re.fullmatch(r"[1-9]\d{3,}(:\d+)?", user[-1]), (
            f"{dockerfile}: last USER {user} is not a numeric non-root uid"
        )
        assert "--no-deps" in text, f"{dockerfile}: installs unpinned transitive dependencies"


def test_entrypoint_runs_the_service_it_was_built_for() -> None:
    """SERVICE (the build argument) stays in the image's environment and the entrypoint runs it with the
    container's arguments; an empty SERVICE fails the build."""
    text = SHARED.read_text()
    assert "ENV SERVICE=${SERVICE}" in text
    assert 'ENTRYPOINT ["/bin/sh", "-c", "exec python -m \\"$SERVICE\\" \\"$@\\"", "service"]' in text
    assert 'test -n "${SERVICE}"' in text
    # The entrypoint's shell line, run as the container would (service "json.tool" stands in for a service).
    script = re.search(r'"-c", "(.*?)", "service"\]', text).group(1).replace('\\"', '"')
    result = run(
        ["/bin/sh", "-c", script, "service", "--help"],
        env={"SERVICE": "json.tool", "PATH": str(Path(sys.executable).parent)},
    )
    assert "usage" in (result.stdout + result.stderr).lower()


def _requirement_files() -> list[Path]:
    return [REPO / "services" / s / "requirements.txt" for s in SERVICES] + [
        REPO / "charts/mlflow/docker/requirements.txt"
    ]


@pytest.mark.parametrize("path", _requirement_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_requirements_are_pinned_to_the_lock(path: Path, lock_versions: dict[str, str]) -> None:
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.+-]+", line), f"{path}: {line!r} is not pinned"
    for name, version in parse_requirements(path).items():
        assert lock_versions.get(name) == version, (
            f"{path}: {name}=={version}, requirements.lock has {lock_versions.get(name)}"
        )


def _first_party_module(name: str) -> Path | None:
    parts = name.split(".")
    for root in FIRST_PARTY_ROOTS:
        base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def import_closure(roots: list[Path]) -> tuple[set[Path], set[str]]:
    """First-party files reached from `roots` through imports, and the third-party top-level names they import."""
    seen: set[Path] = set()
    third_party: set[str] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if _first_party_module(top):
                module = _first_party_module(name) or _first_party_module(name.rpartition(".")[0])
                if module:
                    todo.append(module)
            elif top not in sys.stdlib_module_names:
                third_party.add(top)
    return seen, third_party


def build_arguments() -> dict[str, dict[str, str]]:
    """Service -> the build arguments build_and_push_images.sh passes services/Dockerfile for it."""
    script = (REPO / "build_and_push_images.sh").read_text()
    arguments = {}
    for entry in re.findall(r'^  "([^"]*)"$', script, re.MULTILINE):
        _, dockerfile, _, args = entry.split("|")
        if dockerfile == "services/Dockerfile":
            pairs = dict(arg.split("=", 1) for arg in args.split())
            arguments[pairs["SERVICE"]] = pairs
    return arguments


def _copied_paths(dockerfile: Path, service: str) -> list[Path]:
    text = dockerfile.read_text()
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)$", text, re.MULTILINE))
    for name, value in {**defaults, **build_arguments()[service]}.items():
        text = text.replace("${" + name + "}", value)
    return [REPO / source for source in re.findall(r"^COPY\s+(?!--from)(\S+)\s", text, re.MULTILINE)]


def _dockerignored() -> list[Path]:
    """Paths .dockerignore keeps out of the build context by name (its plain entries): never in an image."""
    entries = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    return [REPO / e for e in entries if e and not e.startswith(("#", "!")) and not set(e) & set("*?[")]


def _in_image(path: Path, copied: list[Path]) -> bool:
    return any(path.is_relative_to(c) for c in copied) and not any(path.is_relative_to(i) for i in _dockerignored())


@pytest.mark.parametrize("service", SERVICES)
def test_image_holds_what_the_service_imports(service: str) -> None:
    """Every module the service reaches is copied into the image and every third-party import is installed.
    A local-only tool inside a service's package (`make demo-drift`'s monitor.drift_demo) is no root
    when .dockerignore keeps it out of the image; nothing in the image may then import it."""
    dockerfile = SHARED
    copied = [p for p in _copied_paths(dockerfile, service) if p.is_dir()]
    roots = [p for p in (REPO / "services" / service).rglob("*.py") if _in_image(p, copied)]
    installed = set(parse_requirements(REPO / "services" / service / "requirements.txt"))
    # Every image carries the Feast repository; Feast (`feast apply`, the feature store) imports its files in
    # the images that run Feast. Elsewhere nothing imports them (they are in no service's import closure).
    if REPO / "feature_repo" in copied and "feast" in installed:
        roots += [p for p in (REPO / "feature_repo").glob("*.py") if _in_image(p, copied)]
    files, third_party = import_closure(roots)
    missing_code = sorted(str(f.relative_to(REPO)) for f in files if not _in_image(f, copied))
    assert missing_code == [], f"{dockerfile}: imported but not copied"

    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for name in sorted(third_party - PROVIDED_AT_RUN_TIME):
        candidates = {normalize(d) for d in distributions.get(name, [])}
        if not candidates & installed:
            missing[name] = sorted(candidates) or "no distribution in .venv provides it"
    assert missing == {}, f"services/{service}/requirements.txt lacks what the code imports"


def test_trainer_image_carries_its_training_profiles() -> None:
    """`python -m trainer --profile NAME` reads services/trainer/profiles.yaml inside the image."""
    copied = [p for p in _copied_paths(SHARED, "trainer") if p.is_dir()]
    assert _in_image(REPO / "services" / "trainer" / "profiles.yaml", copied)
