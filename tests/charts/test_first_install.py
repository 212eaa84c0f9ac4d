"""A first install that ends serving (issue #16): the raw data is bootstrapped into the empty bucket before
ingestion (synthetic by default, or from a URL), in an order Argo CD's waves and plain Helm both keep."""

from collections.abc import Callable
from pathlib import Path

import chart_invariants as inv
import pytest
from chart_tools import REPO, Doc, HelmError, helm_template

PROD = REPO / "argocd" / "environments" / "prod" / "values.yaml"


def _pipeline_job(docs: list[Doc]) -> Doc:
    [job] = [
        d
        for d in docs
        if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "feature-pipeline"
    ]
    return job


def test_ingestion_starts_after_the_raw_data_is_there(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["01-default"]
    pod = _pipeline_job(docs)["spec"]["template"]["spec"]
    [boot] = pod["initContainers"]
    [pipeline] = pod["containers"]
    assert boot["command"] == ["python", "-m", "feature_store", "bootstrap"]
    assert boot["args"] == ["--source=synthetic", "--applicants=20000"]
    assert boot["image"] == pipeline["image"]
    # The same bucket and prefix as the ingestion that reads them.
    for name in ("RAW_BUCKET", "RAW_PREFIX", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
        assert inv.env_value(boot, name) == inv.env_value(pipeline, name), name
    # Argo CD: buckets (wave 1) before the pipeline (wave 2), whose pod bootstraps then ingests.
    buckets = next(
        d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "bucket-provisioning"
    )
    assert inv.wave(buckets) < inv.wave(_pipeline_job(docs))


def test_the_scheduled_materialization_does_not_bootstrap(rendered: dict[str, list[Doc]]) -> None:
    [cronjob] = [
        d
        for d in rendered["01-default"]
        if d["kind"] == "CronJob" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "feature-pipeline"
    ]
    assert "initContainers" not in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_a_url_source_downloads_and_may_leave_the_cluster_for_it(render: Callable[..., list[Doc]]) -> None:
    url = "https://data.example.com/home-credit"
    docs = render({"featurePipeline.bootstrap.source": "url", "featurePipeline.bootstrap.url": url})
    [boot] = _pipeline_job(docs)["spec"]["template"]["spec"]["initContainers"]
    assert boot["args"] == ["--source=url", f"--url={url}"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mlops-feature-pipeline")
    assert {"ports": [{"port": 443, "protocol": "TCP"}]} in policy["spec"]["egress"]
    default = next(
        d for d in render() if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mlops-feature-pipeline"
    )
    assert {"ports": [{"port": 443, "protocol": "TCP"}]} not in default["spec"]["egress"]
    with pytest.raises(HelmError, match=r"featurePipeline\.bootstrap\.url is required"):
        render({"featurePipeline.bootstrap.source": "url"})


def test_another_data_source_is_new_data(render: Callable[..., list[Doc]]) -> None:
    before = _pipeline_job(render())["metadata"]["name"]
    assert _pipeline_job(render({"featurePipeline.bootstrap.applicants": 5000}))["metadata"]["name"] != before


def test_prod_bootstraps_nothing(chart_dependencies: Path) -> None:
    docs = helm_template(value_files=[PROD], set_values={"global.platformImageTag": "0123abc"})
    assert "initContainers" not in _pipeline_job(docs)["spec"]["template"]["spec"]


def _trainer_job(docs: list[Doc]) -> Doc:
    [job] = [
        d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    ]
    return job


def _run_ids(docs: list[Doc]) -> tuple[str, str]:
    """(the run id the pipeline Job records, the one the trainer Job waits for)."""
    [pipeline] = _pipeline_job(docs)["spec"]["template"]["spec"]["containers"]
    [wait] = _trainer_job(docs)["spec"]["template"]["spec"]["initContainers"]
    assert wait["command"] == ["python", "-m", "feature_store", "wait-run"]
    [recorded] = [a.removeprefix("--run-id=") for a in pipeline["args"] if a.startswith("--run-id=")]
    [awaited] = [a.removeprefix("--run-id=") for a in wait["args"] if a.startswith("--run-id=")]
    return recorded, awaited


def test_the_trainer_waits_for_the_features_of_its_own_run(render: Callable[..., list[Doc]]) -> None:
    """Plain Helm starts every Job at once: the trainer's init container waits for the marker the pipeline
    run of the same inputs records; new data is a new run id, a new training profile is not."""
    docs = render()
    recorded, awaited = _run_ids(docs)
    assert recorded == awaited
    [wait] = _trainer_job(docs)["spec"]["template"]["spec"]["initContainers"]
    assert "--timeout=7200" in wait["args"]
    assert _run_ids(render({"featurePipeline.job.dataSnapshot": "2027-01-01"}))[1] != awaited
    assert _run_ids(render({"trainer.args": "{--seed=8}"}))[1] == awaited
    retrain = next(d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == "mlops-trainer-retrain")
    assert "initContainers" not in retrain["spec"]["jobTemplate"]["spec"]["template"]["spec"]
