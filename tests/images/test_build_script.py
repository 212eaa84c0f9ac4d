"""build_and_push_images.sh: every image, tagged with the commit, and the tag written into the
environment's values file; --dry-run needs no Docker. Runs on a throwaway commit of the working tree."""

import os
import re
from pathlib import Path

import pytest
import yaml
from chart_tools import CHART, REPO, commit_working_tree, git, repository_files, run

# The chart's images built from this repository: values path -> repository.
CHART_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
MLFLOW_VALUES = yaml.safe_load((REPO / "charts/mlflow/values.yaml").read_text())
BUILT_IMAGES = {
    block: CHART_VALUES[block]["image"]["repository"]
    for block in ("featurePipeline", "trainer", "modelSync", "bff", "logWorker", "monitor", "batchScoring", "jobWorker")
}
BUILT_IMAGES["mlflow"] = MLFLOW_VALUES["image"]["repository"]
# The SERVICE build argument of services/Dockerfile -> the image repository the chart runs it from.
SERVICE_IMAGES = {
    "feature_store": BUILT_IMAGES["featurePipeline"],
    "trainer": BUILT_IMAGES["trainer"],
    "model_sync": BUILT_IMAGES["modelSync"],
    "bff": BUILT_IMAGES["bff"],
    "log_worker": BUILT_IMAGES["logWorker"],
    "monitor": BUILT_IMAGES["monitor"],
    "batch_scoring": BUILT_IMAGES["batchScoring"],
    "job_worker": BUILT_IMAGES["jobWorker"],
}


@pytest.fixture
def snapshot(tmp_path: Path) -> tuple[Path, str]:
    """A commit of the working tree, and a PATH whose `docker` only records that it was called."""
    repo = tmp_path / "repo"
    sha = commit_working_tree(repo)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/docker-calls\n')
    (fake / "docker").chmod(0o755)
    return repo, sha


def _run(repo: Path, *args: str) -> object:
    env = {**os.environ, "PATH": f"{repo.parent / 'bin'}:{os.environ['PATH']}"}
    return run([repo / "build_and_push_images.sh", *args], cwd=repo, env=env)


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_dry_run_plans_every_image_and_writes_the_tag(snapshot: tuple[Path, str], environment: str) -> None:
    repo, sha = snapshot
    result = _run(repo, "--dry-run", "--env", environment)
    assert result.returncode == 0, result.stderr
    tag = sha[:12]
    values = yaml.safe_load((repo / f"argocd/environments/{environment}/values.yaml").read_text())
    registry = values["global"]["imageRegistry"]
    built = re.findall(
        r"^\+ docker build --file (\S+)(?: --build-arg SERVICE=(\S+))?(?: --build-arg \S+)* --tag (\S+) (\S+)$",
        result.stdout,
        re.MULTILINE,
    )
    pushed = re.findall(r"^\+ docker push (\S+)$", result.stdout, re.MULTILINE)
    assert {ref for _, _, ref, _ in built} == {f"{registry}/{name}:{tag}" for name in BUILT_IMAGES.values()}
    assert sorted(pushed) == sorted(ref for _, _, ref, _ in built)
    # Every service image from services/Dockerfile with its SERVICE; MLflow's from its own folder.
    services = {Path(name).parent.name for name in repository_files() if name.endswith("/requirements.txt")}
    assert {(dockerfile, service) for dockerfile, service, _, _ in built} == {
        ("services/Dockerfile", s) for s in services if s in SERVICE_IMAGES
    } | {("charts/mlflow/docker/Dockerfile", "")}
    assert {SERVICE_IMAGES[s] for _, s, _, _ in built if s} == set(BUILT_IMAGES.values()) - {BUILT_IMAGES["mlflow"]}
    dockerfiles = {name for name in repository_files() if Path(name).name == "Dockerfile"}
    assert {dockerfile for dockerfile, _, _, _ in built} == dockerfiles, "a Dockerfile the script does not build"
    assert values["global"]["platformImageTag"] == tag
    assert git(repo, "diff", "--name-only") == f"argocd/environments/{environment}/values.yaml"
    assert not (repo.parent / "docker-calls").exists(), "--dry-run called docker"


def test_platform_builds_every_image_for_several_architectures_with_buildx(snapshot: tuple[Path, str]) -> None:
    repo, sha = snapshot
    result = _run(repo, "--dry-run", "--platform", "linux/amd64,linux/arm64")
    assert result.returncode == 0, result.stderr
    built = re.findall(
        r"^\+ docker buildx build --platform linux/amd64,linux/arm64 --file (\S+)(?: --build-arg \S+)* "
        r"--tag (\S+) --push (\S+)$",
        result.stdout,
        re.MULTILINE,
    )
    assert len(built) == len(BUILT_IMAGES)
    assert all(ref.endswith(f":{sha[:12]}") for _, ref, _ in built)
    assert "+ docker push" not in result.stdout, "buildx pushes the multi-architecture image itself"


def test_real_run_builds_pushes_and_refuses_a_dirty_tree(snapshot: tuple[Path, str]) -> None:
    repo, sha = snapshot
    result = _run(repo)
    assert result.returncode == 0, result.stderr
    calls = (repo.parent / "docker-calls").read_text().splitlines()
    assert len(calls) == 2 * len(BUILT_IMAGES)
    assert all(sha[:12] in call for call in calls)
    # The values file now differs from the commit: a second build must not reuse that commit's tag.
    again = _run(repo)
    assert again.returncode != 0
    assert "uncommitted changes" in again.stderr


def test_unknown_environment_is_refused(snapshot: tuple[Path, str]) -> None:
    repo, _ = snapshot
    result = _run(repo, "--dry-run", "--env", "staging")
    assert result.returncode != 0
    assert "argocd/environments/staging/values.yaml" in result.stderr


def test_no_registry_host_names_in_the_repository() -> None:
    """Registries are values the user sets; none is written down in the repository."""
    # Built at run time so that this file does not contain the names it looks for.
    hosts = [
        ".".join(parts)
        for parts in (
            ("docker", "io"),
            ("nvcr", "io"),
            ("ghcr", "io"),
            ("quay", "io"),
            ("gcr", "io"),
            ("registry", "k8s", "io"),
            ("public", "ecr", "aws"),
            ("mcr", "microsoft", "com"),
            ("registry-1", "docker", "io"),
        )
    ]
    pattern = re.compile("|".join(re.escape(h) for h in hosts))
    offenders = []
    for name in repository_files():
        path = REPO / name
        if path.is_symlink() or path.suffix in (".png", ".parquet", ".onnx", ".gz", ".zip"):
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{name}: {m.group()}" for m in pattern.finditer(text)]
    assert offenders == []
