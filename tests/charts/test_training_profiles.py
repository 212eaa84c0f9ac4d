"""`trainer.profile` (issue #15): the chart reads the trainer's own profiles file (services/trainer/profiles.yaml,
through the symlink files/training-profiles.yaml), runs the trainer with `--profile`, gives its pods the
profile's resources, GPU and nodeSelector, and retrains when the selected profile's recipe changes."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from chart_tools import CHART, CI_VALUES, REPO, Doc, HelmError, helm_template
from test_job_inputs import job_names

PROFILES = yaml.safe_load((REPO / "services" / "trainer" / "profiles.yaml").read_text())["profiles"]


def trainer_pods(docs: list[Doc]) -> dict[str, Doc]:
    """kind (Job, CronJob) -> pod spec of the release's trainer Job and retrain CronJob."""
    pods = {}
    for doc in docs:
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "trainer":
            continue
        if doc["kind"] == "Job":
            pods["Job"] = doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            pods["CronJob"] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert set(pods) == {"Job", "CronJob"}, pods
    return pods


def trainer_container(pod: Doc) -> Doc:
    [container] = [c for c in pod["containers"] if c["name"] == "trainer"]
    return container


def test_the_chart_reads_the_trainers_profiles_file() -> None:
    """One file, not a copy: the chart's path is a symlink to the file the trainer image carries."""
    link = CHART / "files" / "training-profiles.yaml"
    assert link.is_symlink()
    assert link.resolve() == REPO / "services" / "trainer" / "profiles.yaml"


def test_by_default_the_trainer_runs_the_default_profile_on_its_resources(render: Callable[..., list[Doc]]) -> None:
    for kind, pod in trainer_pods(render()).items():
        container = trainer_container(pod)
        assert container["args"][0] == "--profile=default", kind
        assert container["resources"] == PROFILES["default"]["resources"], kind
        assert "nodeSelector" not in pod, kind


def test_the_large_profile_gives_its_resources_and_nodes_and_retrains_alone(
    render: Callable[..., list[Doc]],
) -> None:
    docs = render({"trainer.profile": "large"})
    for kind, pod in trainer_pods(docs).items():
        container = trainer_container(pod)
        assert container["args"] == ["--profile=large"], kind
        assert container["resources"] == PROFILES["large"]["resources"], kind
        assert pod["nodeSelector"] == PROFILES["large"]["nodeSelector"], kind
    before, after = job_names(render()), job_names(docs)
    assert after["trainer"] != before["trainer"]
    assert after["feature-pipeline"] == before["feature-pipeline"]


def test_values_set_over_the_profile_key_by_key(render: Callable[..., list[Doc]]) -> None:
    """trainer.resources / trainer.nodeSelector win where they say something; the profile fills in the rest.
    Like the resources of any Job, they do not rename the trainer Job."""
    values = {
        "trainer.profile": "large",
        "trainer.resources.limits.memory": "20Gi",
        "trainer.nodeSelector.topology\\.kubernetes\\.io/zone": "zone-a",
        "trainer.args": "{--param=max_iter=500}",
    }
    docs = render(values)
    for kind, pod in trainer_pods(docs).items():
        container = trainer_container(pod)
        assert container["args"] == ["--profile=large", "--param=max_iter=500"], kind
        resources = PROFILES["large"]["resources"]
        assert container["resources"] == {**resources, "limits": {**resources["limits"], "memory": "20Gi"}}, kind
        assert pod["nodeSelector"] == {**PROFILES["large"]["nodeSelector"], "topology.kubernetes.io/zone": "zone-a"}
    resources_only = {k: v for k, v in values.items() if k != "trainer.args"}
    assert job_names(render(resources_only)) == job_names(render({"trainer.profile": "large"}))


def test_an_unknown_profile_fails_naming_it_and_the_profiles(render: Callable[..., list[Doc]]) -> None:
    with pytest.raises(HelmError) as failure:
        render({"trainer.profile": "huge"})
    message = str(failure.value)
    assert 'trainer.profile: no training profile "huge" in services/trainer/profiles.yaml' in message
    assert f"profiles: {', '.join(sorted(PROFILES))}" in message


def test_the_profile_is_chosen_by_its_value_not_by_args(render: Callable[..., list[Doc]]) -> None:
    """`--profile` in trainer.args would train one profile on the resources of another."""
    with pytest.raises(HelmError, match=r'trainer.args: "--profile=large"; set trainer.profile instead'):
        render({"trainer.args": "{--profile=large}"})


@pytest.fixture
def chart_with_profiles(
    tmp_path: Path, chart_dependencies: Path
) -> Callable[[dict[str, object]], Callable[..., list[Doc]]]:
    """A copy of the chart whose profiles file is the shipped one changed by a function; returns its renderer."""
    copy = tmp_path / "mlops"
    shutil.copytree(CHART, copy, symlinks=False)

    def with_profiles(profiles: dict[str, object]) -> Callable[..., list[Doc]]:
        (copy / "files" / "training-profiles.yaml").write_text(yaml.safe_dump({"profiles": profiles}))
        return lambda values=None: helm_template(copy, value_files=[CI_VALUES[0]], set_values=values)

    return with_profiles


def test_a_profiles_gpu_is_the_containers_gpu_limit(
    chart_with_profiles: Callable[..., Callable[..., list[Doc]]],
) -> None:
    large = {**PROFILES["large"], "gpu": {"count": 2}}
    render = chart_with_profiles({**PROFILES, "large": large})
    for kind, pod in trainer_pods(render({"trainer.profile": "large"})).items():
        limits = trainer_container(pod)["resources"]["limits"]
        assert limits == {**PROFILES["large"]["resources"]["limits"], "nvidia.com/gpu": 2}, kind
    for kind, pod in trainer_pods(render()).items():
        assert "nvidia.com/gpu" not in trainer_container(pod)["resources"]["limits"], kind


@pytest.mark.parametrize(
    ("profile", "change", "retrains"),
    [
        ("default", {"hyperparameters": {**PROFILES["default"]["hyperparameters"], "max_iter": 400}}, True),
        ("default", {"holdout_fraction": 0.25}, True),
        ("default", {"seed": 8}, True),
        ("default", {"resources": PROFILES["large"]["resources"], "description": "bigger pod"}, False),
        ("small", {"hyperparameters": {"max_iter": 10}}, False),
    ],
    ids=["hyperparameters", "holdout", "seed", "resources-only", "another-profile"],
)
def test_a_new_recipe_of_the_selected_profile_retrains_without_ingesting_again(
    chart_with_profiles: Callable[..., Callable[..., list[Doc]]],
    profile: str,
    change: dict[str, object],
    retrains: bool,
) -> None:
    before = job_names(chart_with_profiles(PROFILES)())
    after = job_names(chart_with_profiles({**PROFILES, profile: {**PROFILES[profile], **change}})())
    assert after["feature-pipeline"] == before["feature-pipeline"]
    assert (after["trainer"] != before["trainer"]) is retrains
