"""The batch-scoring CronJob (issue #15): `python -m batch_scoring --as-of now` over the whole portfolio,
suspended by default and the template of on-demand runs; its env is exactly its Settings, its threshold
the BFF's, and the NetworkPolicies let it reach Triton's gRPC port and S3, nothing more."""

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import chart_invariants as inv
import pytest
import yaml
from chart_tools import REPO, Doc, HelmError, helm_template

from batch_scoring.__main__ import parser
from batch_scoring.job import JOB_ID, JobSpec
from mlops_common.settings import DecisionSettings

PROD = REPO / "argocd" / "environments" / "prod" / "values.yaml"
NAME = "mlops-batch-scoring"
COMPONENT = "app.kubernetes.io/component"
# What the Job controller names a scheduled run: the CronJob's name and the scheduled time in minutes.
SCHEDULED_SUFFIX = "-29384720"


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _pod(docs: list[Doc], name: str = NAME) -> Doc:
    return _get(docs, "CronJob", name)["spec"]["jobTemplate"]["spec"]["template"]


def _container(docs: list[Doc], name: str = NAME) -> Doc:
    [container] = _pod(docs, name)["spec"]["containers"]
    return container


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container["env"]}


def _expand(args: list[str], job_name: str) -> list[str]:
    """The arguments as the kubelet passes them, `$(K8S_JOB_NAME)` expanded."""
    return [a.replace("$(K8S_JOB_NAME)", job_name) for a in args]


def test_cronjob_scores_the_portfolio_as_of_now_and_is_suspended_by_default(render: Callable[..., list[Doc]]) -> None:
    docs = render()
    cronjob = _get(docs, "CronJob", NAME)
    spec = cronjob["spec"]
    assert spec["suspend"] is True
    assert spec["schedule"] == "0 2 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 3600
    assert (spec["jobTemplate"]["spec"]["backoffLimit"], spec["jobTemplate"]["spec"]["activeDeadlineSeconds"]) == (
        2,
        7200,
    )
    container = _container(docs)
    assert container["image"] == "registry.example.com/mlops-batch-scoring:0123456789ab"
    assert container["command"] == ["python", "-m", "batch_scoring"]
    assert container["args"] == [
        "--as-of=now",
        "--output=s3://mlops-inference-logs/batch-scores",
        "--job-id=$(K8S_JOB_NAME)",
    ]
    # The job id is the Job's name, from the label the Job controller puts on its pods.
    assert _env(container)["K8S_JOB_NAME"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
    }
    # The service's own command line takes them: as of the run's start, into <output>/<Job name>.parquet.
    args = parser().parse_args(_expand(container["args"], NAME + SCHEDULED_SUFFIX))
    assert isinstance(args.as_of, datetime)
    assert args.as_of.tzinfo is not None
    spec_ = JobSpec(args.job_id, args.output, args.input, args.as_of, args.model_version)
    assert (spec_.job_id, spec_.output) == (NAME + SCHEDULED_SUFFIX, "s3://mlops-inference-logs/batch-scores")


def test_only_a_dependency_outage_is_retried(render: Callable[..., list[Doc]]) -> None:
    """The job's exit codes (batch_scoring.__main__): 2 bad request and 4 model error end the Job at once."""
    from batch_scoring.__main__ import EXIT_BAD_REQUEST, EXIT_DEPENDENCY_UNAVAILABLE, EXIT_MODEL_ERROR

    job = _get(render(), "CronJob", NAME)["spec"]["jobTemplate"]["spec"]
    [rule] = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"] == {
        "containerName": NAME.removeprefix("mlops-"),
        "operator": "In",
        "values": [EXIT_BAD_REQUEST, EXIT_MODEL_ERROR],
    }
    assert EXIT_DEPENDENCY_UNAVAILABLE not in rule["onExitCodes"]["values"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # what podFailurePolicy requires


def test_values_reach_the_cronjob(render: Callable[..., list[Doc]]) -> None:
    docs = render(
        {
            "batchScoring.suspend": False,
            "batchScoring.schedule": "30 1 * * 1",
            "batchScoring.output.bucket": "scores",
            "batchScoring.output.prefix": "portfolio/daily",
            "batchScoring.inFlight": 16,
            "batchScoring.args[0]": "--model-version",
            "batchScoring.args[1]": "3",
            "batchScoring.settings.BATCH_SCORING_CHUNK_ROWS": 1024,
            "batchScoring.tmpSizeLimit": "5Gi",
        }
    )
    spec = _get(docs, "CronJob", NAME)["spec"]
    assert (spec["suspend"], spec["schedule"]) == (False, "30 1 * * 1")
    container = _container(docs)
    assert container["args"] == [
        "--as-of=now",
        "--output=s3://scores/portfolio/daily",
        "--job-id=$(K8S_JOB_NAME)",
        "--model-version",
        "3",
    ]
    assert parser().parse_args(_expand(container["args"], "run-1")).model_version == "3"
    assert inv.env_value(container, "BATCH_SCORING_IN_FLIGHT") == "16"
    assert inv.env_value(container, "BATCH_SCORING_CHUNK_ROWS") == "1024"
    [tmp] = [v for v in _pod(docs)["spec"]["volumes"] if v["name"] == "tmp"]
    assert tmp["emptyDir"]["sizeLimit"] == "5Gi"


def test_job_names_are_valid_job_ids_even_for_long_release_names(render: Callable[..., list[Doc]]) -> None:
    """The CronJob's name leaves the controller room for its suffix, and the Job's name passes --job-id."""
    docs = render({"fullnameOverride": "x" * 45})
    [cronjob] = [d for d in docs if d["kind"] == "CronJob" and d["metadata"]["labels"][COMPONENT] == "batch-scoring"]
    name = cronjob["metadata"]["name"]
    assert name.startswith("x" * 45)
    assert len(name) <= 52
    assert JOB_ID.fullmatch(name + SCHEDULED_SUFFIX)


def test_pod_is_locked_down_like_the_other_jobs(render: Callable[..., list[Doc]]) -> None:
    docs = render()
    pod, trainer = _pod(docs), _pod(docs, "mlops-trainer-retrain")
    assert pod["metadata"]["labels"][COMPONENT] == "batch-scoring"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    # The platform's ServiceAccount, the trainer's: its cloud role grants S3.
    assert spec["serviceAccountName"] == trainer["spec"]["serviceAccountName"] == "mlops"
    assert spec["securityContext"]["runAsNonRoot"] is True
    container = _container(docs)
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= container["resources"].keys()
    # The results are written under /tmp before their upload: a sized emptyDir.
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["sizeLimit"] == "2Gi"


def test_env_is_exactly_the_settings_the_job_reads(render: Callable[..., list[Doc]]) -> None:
    docs = render()
    container = _container(docs)
    settings = inv.settings_class("batch_scoring")
    names = {name for field_name, field in settings.model_fields.items() for name in inv._env_names(field_name, field)}
    env = _env(container)
    assert set(env) - inv.argument_only_env(container) <= names
    assert inv.argument_only_env(container) == {"K8S_JOB_NAME"}
    assert inv.env_problems([_get(docs, "CronJob", NAME)]) == []
    # Triton: the Service's HTTP port, the model model sync serves.
    triton = _get(docs, "Service", "mlops-triton")["spec"]["ports"]
    assert (
        inv.env_value(container, "TRITON_HTTP_URL")
        == f"mlops-triton:{next(p for p in triton if p['name'] == 'http')['port']}"
    )
    sync = next(
        c
        for c in _get(docs, "Deployment", "mlops-triton")["spec"]["template"]["spec"]["containers"]
        if c["name"] != "triton"
    )
    assert inv.env_value(container, "TRITON_MODEL_NAME") == inv.setting(sync, "model_sync", "triton_model_name")
    assert inv.env_value(container, "BATCH_SCORING_IN_FLIGHT") == "8"
    # S3 and Feast exactly as the trainer gets them (the same helpers).
    trainer = _env(_container(docs, "mlops-trainer-retrain"))
    shared = {n for n in env if n.startswith(("S3_", "AWS_", "FEAST_", "RAW_", "OFFLINE_"))}
    assert {"S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "FEAST_REGISTRY_PATH", "FEAST_S3_ENDPOINT_URL"} <= shared
    assert {n: env[n] for n in shared} == {n: trainer[n] for n in shared}


def test_headless_triton_spreads_the_calls_over_every_pod(render: Callable[..., list[Doc]]) -> None:
    container = _container(render({"batchScoring.tritonService": "headless"}))
    assert inv.env_value(container, "TRITON_HTTP_URL") == "mlops-triton-headless:8000"


def _bff(docs: list[Doc]) -> Doc:
    return _get(docs, "Deployment", "mlops-bff")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("threshold", [None, 0.7])
def test_decision_threshold_is_the_bffs(
    render: Callable[..., list[Doc]], tmp_path: Path, threshold: float | None
) -> None:
    values = tmp_path / "threshold.yaml"
    values.write_text(yaml.safe_dump({} if threshold is None else {"platform": {"decisionThreshold": threshold}}))
    docs = render(value_files=(values,))
    scoring, bff = (
        inv.env_value(_container(docs), "DECISION_THRESHOLD"),
        inv.env_value(_bff(docs), "DECISION_THRESHOLD"),
    )
    assert scoring == bff
    expected = DecisionSettings.model_fields["decision_threshold"].default if threshold is None else threshold
    assert float(scoring) == expected  # the chart's default is the services' own


def test_prod_scores_into_its_own_bucket_through_the_platform_role(chart_dependencies: object) -> None:
    docs = helm_template(value_files=[PROD], set_values={"global.platformImageTag": "0123abc"})
    container = _container(docs)
    assert "--output=s3://mlops-prod-inference-logs/batch-scores" in container["args"]
    # AWS S3 through the pod's identity: no endpoint, no static keys, the annotated ServiceAccount.
    assert not {"S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(_env(container))
    account = _pod(docs)["spec"]["serviceAccountName"]
    annotations = _get(docs, "ServiceAccount", account)["metadata"]["annotations"]
    assert "eks.amazonaws.com/role-arn" in annotations
    assert inv.env_problems([_get(docs, "CronJob", NAME)]) == []
    # S3 outside the cluster, on the HTTPS port.
    assert _reaches(docs, _pod(docs)["metadata"]["labels"], None, 443)


# ---- NetworkPolicies: what the pod may reach, and what admits it


def _selects(policy: Doc, labels: dict[str, str], policy_type: str) -> bool:
    spec = policy["spec"]
    return policy_type in spec.get("policyTypes", []) and all(
        labels.get(k) == v for k, v in spec["podSelector"].get("matchLabels", {}).items()
    )


def _peer_matches(peer: Doc, labels: dict[str, str] | None) -> bool:
    """A peer of the release's namespace (podSelector alone) matching `labels`; `None`: outside the cluster."""
    if labels is None:
        return "ipBlock" in peer
    if "namespaceSelector" in peer or "podSelector" not in peer:
        return False
    return all(labels.get(k) == v for k, v in peer["podSelector"].get("matchLabels", {}).items())


def _allows(docs: list[Doc], pod: dict[str, str], peer: dict[str, str] | None, port: int, direction: str) -> bool:
    """The policies selecting `pod` let it talk to `peer` on `port` (egress: to it; ingress: from it)."""
    policy_type, peers_key = {"egress": ("Egress", "to"), "ingress": ("Ingress", "from")}[direction]
    selecting = [d for d in docs if d["kind"] == "NetworkPolicy" and _selects(d, pod, policy_type)]
    if not selecting:
        return True
    return any(
        (not rule.get("ports") or any(p.get("port") == port for p in rule["ports"]))
        and (peers_key not in rule or any(_peer_matches(p, peer) for p in rule[peers_key]))
        for policy in selecting
        for rule in policy["spec"].get(direction, [])
    )


def _reaches(docs: list[Doc], pod: dict[str, str], peer: dict[str, str] | None, port: int) -> bool:
    return _allows(docs, pod, peer, port, "egress") and (peer is None or _allows(docs, peer, pod, port, "ingress"))


def _labels(docs: list[Doc], kind: str, name: str) -> dict[str, str]:
    return _get(docs, kind, name)["spec"]["template"]["metadata"]["labels"]


def test_network_policies_let_it_reach_triton_http_and_s3_only(render: Callable[..., list[Doc]]) -> None:
    docs = render()
    scoring = _pod(docs)["metadata"]["labels"]
    triton = _labels(docs, "Deployment", "mlops-triton")
    minio = _labels(docs, "StatefulSet", "mlops-minio")
    redis = _labels(docs, "StatefulSet", "mlops-redis")
    assert _reaches(docs, scoring, triton, 8000)
    assert _reaches(docs, scoring, minio, 9000)
    assert not _reaches(docs, scoring, triton, 8001)  # gRPC: not its protocol
    assert not _reaches(docs, scoring, redis, 6379)  # the offline store only
    assert not _reaches(docs, scoring, None, 443)
    # DNS, to resolve the Services.
    assert any(
        {"port": 53, "protocol": "UDP"} in rule["ports"] for rule in _get(docs, "NetworkPolicy", NAME)["spec"]["egress"]
    )
    # The checker has teeth: another component is not admitted by Triton.
    assert not _reaches(docs, _labels(docs, "Deployment", "mlops-log-worker"), triton, 8000)


def test_every_job_writing_to_s3_reaches_minio(render: Callable[..., list[Doc]]) -> None:
    """Egress alone is not enough: MinIO's own policy must admit each of them (the table maintenance was
    once missing there, so the nightly compaction could not reach in-cluster MinIO)."""
    docs = render()
    minio = _labels(docs, "StatefulSet", "mlops-minio")
    cronjobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CronJob"}
    for name in ("mlops-log-worker-maintenance", "mlops-trainer-retrain", "mlops-feature-pipeline-materialize", NAME):
        labels = cronjobs[name]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert _reaches(docs, labels, minio, 9000), name


def test_disabled_renders_nothing_of_it(render: Callable[..., list[Doc]]) -> None:
    docs = render({"batchScoring.enabled": False})
    assert not [d for d in docs if "batch-scoring" in d["metadata"]["name"]]
    assert not [d for d in docs if d["metadata"].get("labels", {}).get(COMPONENT) == "batch-scoring"]
    assert "batch-scoring" not in str([d["spec"] for d in docs if d["kind"] == "NetworkPolicy"])
    assert inv.all_problems(docs, "mlops") == []


BAD_VALUES = {
    "output set in args": ({"batchScoring.args[0]": "--output=s3://elsewhere"}, "batchScoring.args"),
    "job id set in args": ({"batchScoring.args[0]": "--job-id"}, "the Job's name"),
    "as-of set in args": ({"batchScoring.args[0]": "--as-of=2026-01-01"}, "--as-of"),
    "in-flight as a plain setting": ({"batchScoring.settings.BATCH_SCORING_IN_FLIGHT": 4}, "batchScoring.inFlight"),
    "threshold as a BFF setting": ({"bff.settings.DECISION_THRESHOLD": "0.6"}, "platform.decisionThreshold"),
    "threshold as a batch setting": (
        {"batchScoring.settings.DECISION_THRESHOLD": "0.6"},
        "batchScoring.settings.DECISION_THRESHOLD: set platform.decisionThreshold",
    ),
    "threshold above 1": ({"platform.decisionThreshold": 1.5}, "/platform/decisionThreshold"),
    "headless without the headless Service": (
        {"batchScoring.tritonService": "headless", "triton.headlessService.enabled": False},
        "batchScoring.tritonService headless needs triton.headlessService.enabled",
    ),
    "tmp size not a quantity": ({"batchScoring.tmpSizeLimit": "lots"}, "/batchScoring/tmpSizeLimit"),
    "unknown key": ({"batchScoring.outputs": "x"}, "'outputs' not allowed"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_value_is_named(render: Callable[..., list[Doc]], case: str) -> None:
    values, expected = BAD_VALUES[case]
    with pytest.raises(HelmError) as failure:
        render(values)
    assert expected in str(failure.value), str(failure.value)
