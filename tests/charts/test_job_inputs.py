"""The feature-pipeline and trainer Jobs are keyed by what they compute from (issue #16): a new image of
another service, or a new platformImageTag, keeps their names (Argo CD keeps the finished runs); new data,
feature definitions or training inputs change them (a new run)."""

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from chart_tools import CHART, CI_VALUES, REPO, Doc, helm_template

CHECKSUMS = REPO / "tools" / "job_input_checksums.py"


def job_names(docs: list[Doc]) -> dict[str, str]:
    """component -> name of the release's one-off Job of that component."""
    jobs = [d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/name"] == "mlops"]
    names = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d["metadata"]["name"] for d in jobs}
    assert set(names) >= {"feature-pipeline", "trainer"}, names
    return names


@pytest.fixture(scope="module")
def names(render: Callable[..., list[Doc]]) -> Callable[..., dict[str, str]]:
    return lambda values=None: job_names(render(values))


def test_job_input_checksums_in_the_chart_are_current() -> None:
    """The chart's files/job-inputs/ match the repository's feature definitions and training code."""
    result = subprocess.run([sys.executable, CHECKSUMS, "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_checksum_check_fails_when_a_feature_definition_changes(tmp_path: Path) -> None:
    """The check above has teeth: an edited feature definition makes the shipped checksum stale."""
    copy = tmp_path / "repo"
    for name in ("tools", "feature_repo", "services/feature_store", "services/trainer", "services/mlops_common"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(CHART / "files" / "job-inputs", copy / "charts/mlops/files/job-inputs")
    check = [sys.executable, copy / "tools" / "job_input_checksums.py", "--check"]
    assert subprocess.run(check, capture_output=True, check=False).returncode == 0
    with (copy / "feature_repo" / "credit_features.py").open("a") as f:
        f.write("\n# a new feature\n")
    result = subprocess.run(check, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "feature-pipeline.sha256" in result.stderr
    assert "trainer.sha256" not in result.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"bff.image.tag": "bff-fix-1"},
        {"global.platformImageTag": "0123456789abcdef"},
        {"featurePipeline.image.tag": "other", "trainer.image.tag": "other", "modelSync.image.tag": "other"},
        {"trainer.resources.limits.memory": "8Gi", "featurePipeline.job.activeDeadlineSeconds": 9000},
        {"bff.replicaCount": 5, "platform.logLevel": "DEBUG"},
    ],
    ids=["bff-image", "platform-image-tag", "job-images", "resources-deadline", "unrelated-values"],
)
def test_job_names_do_not_change_with_images_or_unrelated_values(
    names: Callable[..., dict[str, str]], values: dict[str, object]
) -> None:
    assert names(values) == names()


@pytest.mark.parametrize(
    "values",
    [
        {"featurePipeline.job.dataSnapshot": "2026-12-01"},
        {"platform.buckets.raw": "another-raw-bucket"},
        {"platform.buckets.rawPrefix": "home-credit-v2"},
        {"featurePipeline.settings.INGEST_CHUNK_ROWS": 1000},
    ],
    ids=["data-snapshot", "raw-bucket", "raw-prefix", "pipeline-settings"],
)
def test_new_data_runs_ingestion_and_training_again(
    names: Callable[..., dict[str, str]], values: dict[str, object]
) -> None:
    before, after = names(), names(values)
    assert after["feature-pipeline"] != before["feature-pipeline"]
    assert after["trainer"] != before["trainer"]


@pytest.mark.parametrize(
    "values",
    [
        {"trainer.args": "{--param=max_iter=300}"},
        {"trainer.settings.MIN_HOLDOUT_AUC": 0.7},
        {"platform.registeredModelName": "credit-default-v2"},
    ],
    ids=["hyperparameters", "trainer-settings", "registered-model"],
)
def test_new_training_profile_retrains_without_ingesting_again(
    names: Callable[..., dict[str, str]], values: dict[str, object]
) -> None:
    before, after = names(), names(values)
    assert after["feature-pipeline"] == before["feature-pipeline"]
    assert after["trainer"] != before["trainer"]


@pytest.fixture(scope="module")
def chart_copy(tmp_path_factory: pytest.TempPathFactory, chart_dependencies: Path) -> Path:
    """charts/mlops copied with its packaged subcharts, the symlinked observability files resolved."""
    copy = tmp_path_factory.mktemp("chart") / "mlops"
    shutil.copytree(CHART, copy, symlinks=False)
    return copy


@pytest.mark.parametrize(
    ("checksum", "changes"),
    [("feature-pipeline", {"feature-pipeline", "trainer"}), ("trainer", {"trainer"})],
)
def test_new_feature_definitions_or_training_code_change_the_names(
    chart_copy: Path, checksum: str, changes: set[str]
) -> None:
    """The checksums the chart ships (tools/job_input_checksums.py) are inputs: new definitions, new Jobs."""
    path = chart_copy / "files" / "job-inputs" / f"{checksum}.sha256"
    original = path.read_text()
    before = job_names(helm_template(chart_copy, value_files=[CI_VALUES[0]]))
    path.write_text("0" * 64 + "\n")
    try:
        after = job_names(helm_template(chart_copy, value_files=[CI_VALUES[0]]))
    finally:
        path.write_text(original)
    assert {component for component in before if before[component] != after[component]} == changes


def test_two_commits_differing_only_in_the_bff_image_render_the_same_jobs(
    render: Callable[..., list[Doc]],
) -> None:
    """The issue's acceptance, whole objects: only the BFF's image differs between the two renders, and the
    Jobs (names, hook annotations, waves, pod templates) are identical objects."""
    first, second = (
        render({"global.platformImageTag": "aaaa111"}),
        render({"global.platformImageTag": "aaaa111", "bff.image.tag": "bbbb222"}),
    )

    def one_offs(docs: list[Doc]) -> list[Doc]:
        return [d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/name"] == "mlops"]

    assert one_offs(first) == one_offs(second)
    changed = {f"{d['kind']}/{d['metadata']['name']}" for d in second if d not in first}
    assert changed == {"Deployment/mlops-bff"}
