"""The chart rendered exactly as Argo CD's repo-server renders an Application from a git commit,
then validated like the ci/ scenarios.

What the repo-server does for a Helm source: clone repoURL at targetRevision, `helm dependency
build <path>`, `helm template <releaseName> <path> -n <namespace> -f <valueFiles> --kube-version
<cluster's>`. Here the clone comes from a local bare repository (git's `insteadOf` maps the
Application's repoURL onto it) holding a commit of the working tree after build_and_push_images.sh
wrote the tag. This proves what Argo CD would render and apply for that commit; it is not a sync
against a cluster (no apply, health assessment or prune)."""

import os
from pathlib import Path

import chart_invariants
import pytest
from chart_tools import (
    KUBE_VERSION,
    Doc,
    commit_working_tree,
    git,
    helm_template,
    run,
    tool,
    validate_builtin_kinds,
    validate_custom_resources,
)


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """A git configuration of the test's own, so the URL rewrite touches nothing of the machine's."""
    config = tmp_path / "gitconfig"
    config.touch()
    return {**os.environ, "GIT_CONFIG_GLOBAL": str(config), "GIT_CONFIG_NOSYSTEM": "1"}


def _build_and_commit(workdir: Path, environment: str) -> str:
    """What CI does on a push: build (dry run here) at HEAD, commit the tag it wrote. Returns the image tag."""
    result = run([workdir / "build_and_push_images.sh", "--dry-run", "--env", environment], cwd=workdir)
    assert result.returncode == 0, result.stderr
    tag = git(workdir, "rev-parse", "--short=12", "HEAD")
    git(workdir, "commit", "--quiet", "--all", "--message", f"deploy {tag} to {environment}")
    return tag


def _render_as_argocd(app: Doc, tmp_path: Path, git_env: dict[str, str], name: str) -> list[Doc]:
    source = app["spec"]["source"]
    checkout = tmp_path / name
    clone = run(
        ["git", "clone", "--quiet", "--branch", source["targetRevision"], source["repoURL"], checkout], env=git_env
    )
    assert clone.returncode == 0, clone.stderr
    chart = checkout / source["path"]
    build = run([tool("helm"), "dependency", "build", chart])
    assert build.returncode == 0, build.stderr
    return helm_template(
        chart=chart,
        value_files=[chart / v for v in source["helm"]["valueFiles"]],
        release=source["helm"]["releaseName"],
        namespace=app["spec"]["destination"]["namespace"],
    )


def _one_off_jobs(docs: list[Doc]) -> set[str]:
    components = ("feature-pipeline", "trainer")
    names = {
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] in components
    }
    assert len(names) == 2, names
    return names


def _images(docs: list[Doc]) -> set[str]:
    return {c["image"] for _, t in chart_invariants.pod_templates(docs) for c in chart_invariants.containers(t)}


def test_argocd_renders_each_pushed_commit(applications: list[Doc], tmp_path: Path, git_env: dict[str, str]) -> None:
    workdir = tmp_path / "work"
    commit_working_tree(workdir)
    repo_url = applications[0]["spec"]["source"]["repoURL"]
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    git(workdir, "remote", "add", "origin", str(remote))
    config = Path(git_env["GIT_CONFIG_GLOBAL"])
    config.write_text(f'[url "{remote}"]\n\tinsteadOf = {repo_url}\n')

    for app in applications:
        environment = app["metadata"]["name"].removeprefix("mlops-")
        # The branch the Application tracks (prod: `release`, where a promotion merges main).
        branch = app["spec"]["source"]["targetRevision"]
        first_tag = _build_and_commit(workdir, environment)
        git(workdir, "push", "--quiet", "origin", f"main:{branch}")
        first = _render_as_argocd(app, tmp_path, git_env, f"{environment}-1")

        assert validate_builtin_kinds({app["metadata"]["name"]: first}) == []
        assert validate_custom_resources({app["metadata"]["name"]: first}) == []
        assert chart_invariants.all_problems(first, app["spec"]["destination"]["namespace"]) == []
        built = {image for image in _images(first) if "/mlops-" in image}
        assert built
        assert all(image.endswith(f":{first_tag}") for image in built), built

        # A code change pushed and built: the manifests Argo CD renders now name the new images.
        (workdir / "services" / "bff" / "__init__.py").write_text(
            (workdir / "services" / "bff" / "__init__.py").read_text() + "\n# a change\n"
        )
        git(workdir, "commit", "--quiet", "--all", "--message", "change the BFF")
        second_tag = _build_and_commit(workdir, environment)
        git(workdir, "push", "--quiet", "origin", f"main:{branch}")
        second = _render_as_argocd(app, tmp_path, git_env, f"{environment}-2")
        assert second_tag != first_tag
        assert {image.replace(first_tag, second_tag) for image in _images(first)} == _images(second)
        # Issue #16: a BFF-only commit neither re-runs ingestion nor training (same Job names, hooks kept).
        assert _one_off_jobs(second) == _one_off_jobs(first)


def test_kube_version_matches_the_validation_target() -> None:
    assert KUBE_VERSION.startswith("1.31")
