"""The Argo CD Applications: valid against the CRD, automated sync with prune, self-heal and retries,
namespace creation, HPA-owned replica counts ignored, and everything they point at exists."""

import pytest
from chart_tools import REPO, Doc, helm_dependency_build, helm_template, validate_custom_resources


def test_applications_and_project_match_their_crds(applications: list[Doc], project: Doc) -> None:
    assert validate_custom_resources({"argocd": [*applications, project]}) == []


def test_dev_and_prod_exist(applications: list[Doc]) -> None:
    assert {app["metadata"]["name"] for app in applications} >= {"mlops-dev", "mlops-prod"}


def test_sync_policy(applications: list[Doc]) -> None:
    for app in applications:
        policy = app["spec"]["syncPolicy"]
        assert policy["automated"] == {"prune": True, "selfHeal": True}, app["metadata"]["name"]
        assert {"CreateNamespace=true", "RespectIgnoreDifferences=true"} <= set(policy["syncOptions"])
        assert policy["retry"]["limit"] > 0
        assert {"duration", "factor", "maxDuration"} <= policy["retry"]["backoff"].keys()


def test_sources_point_at_this_repository(applications: list[Doc], project: Doc) -> None:
    for app in applications:
        source, name = app["spec"]["source"], app["metadata"]["name"]
        assert app["spec"]["project"] == project["metadata"]["name"], name
        assert source["repoURL"] in project["spec"]["sourceRepos"], name
        assert (REPO / source["path"] / "Chart.yaml").is_file(), name
        for values in source["helm"]["valueFiles"]:
            path = (REPO / source["path"] / values).resolve()
            assert path.is_file(), f"{name}: {values}"
            assert path.is_relative_to(REPO), f"{name}: {values} leaves the repository"
        destination = {
            "server": app["spec"]["destination"]["server"],
            "namespace": app["spec"]["destination"]["namespace"],
        }
        assert destination in project["spec"]["destinations"], name
    assert len({app["spec"]["source"]["repoURL"] for app in applications}) == 1


@pytest.fixture(scope="module")
def rendered_environments(applications: list[Doc]) -> dict[str, list[Doc]]:
    helm_dependency_build()
    rendered = {}
    for app in applications:
        source = app["spec"]["source"]
        rendered[app["metadata"]["name"]] = helm_template(
            chart=REPO / source["path"],
            value_files=[REPO / source["path"] / v for v in source["helm"]["valueFiles"]],
            # The committed files carry no tag until build_and_push_images.sh writes one.
            set_values={"global.platformImageTag": "0123456789ab"},
            release=source["helm"]["releaseName"],
            namespace=app["spec"]["destination"]["namespace"],
        )
    return rendered


def test_ignore_differences_cover_exactly_the_hpa_targets(
    applications: list[Doc], rendered_environments: dict[str, list[Doc]]
) -> None:
    for app in applications:
        docs = rendered_environments[app["metadata"]["name"]]
        targets = {
            (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"])
            for h in docs
            if h["kind"] == "HorizontalPodAutoscaler"
        }
        ignored = {
            (d["kind"], d["name"]) for d in app["spec"]["ignoreDifferences"] if d["jsonPointers"] == ["/spec/replicas"]
        }
        assert targets, app["metadata"]["name"]
        assert ignored == targets, app["metadata"]["name"]


def test_environment_values_leave_the_tag_to_the_build_script() -> None:
    for values in (REPO / "argocd" / "environments").glob("*/values.yaml"):
        lines = [line for line in values.read_text().splitlines() if line.startswith("  platformImageTag:")]
        assert len(lines) == 1, f"{values}: build_and_push_images.sh needs exactly one '  platformImageTag:' line"


def test_readme_explains_webhook_and_rollback() -> None:
    text = (REPO / "argocd" / "README.md").read_text().lower()
    assert "webhook" in text
    assert "git revert" in text
