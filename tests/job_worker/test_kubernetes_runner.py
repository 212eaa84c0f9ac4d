"""job_worker.kubernetes_runner's pure part: the Job of an attempt made from a CronJob as the API server returns
it, and the attempt's exit code and reason read from the Job and its pods as the API server returns them.
The CronJob below has the shape of the chart's batch-scoring one (tests/charts/test_job_worker_chart.py builds
Jobs from the chart's own rendered CronJobs and validates them against the Kubernetes schema). The API calls
themselves are not tested: there is no Kubernetes API server here."""

import ast
import copy
import inspect
import json

import pytest

from job_worker import kubernetes_runner as kr
from job_worker.kubernetes_runner import (
    EXIT_DISRUPTED,
    FinishedRun,
    TemplateError,
    UnknownProfileError,
    attempt_fate,
    failure_message,
    job_from_cronjob,
    job_name,
    outcome,
    profile_of,
)
from job_worker.runners import JobLaunch

NAMESPACE = "mlops"
UID = "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
JOB_ID = "0123456789ab"
SELECTOR = {
    "app.kubernetes.io/name": "mlops",
    "app.kubernetes.io/instance": "mlops",
}
CHART_LABELS = {
    "helm.sh/chart": "mlops-0.1.0",
    **SELECTOR,
    "app.kubernetes.io/version": "0.1.0",
    "app.kubernetes.io/managed-by": "Helm",
    "app.kubernetes.io/part-of": "mlops",
}


def _cronjob(name: str, component: str, container: dict, annotations: dict | None = None) -> dict:
    """A CronJob as read back from the API server: uid, resourceVersion, managedFields, status and all."""
    labels = {**CHART_LABELS, "app.kubernetes.io/component": component}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": UID,
            "resourceVersion": "48211",
            "creationTimestamp": "2026-11-28T12:00:00Z",
            "labels": labels,
            "annotations": {
                "argocd.argoproj.io/sync-wave": "3",
                "argocd.argoproj.io/tracking-id": f"mlops-dev:batch/CronJob:{NAMESPACE}/{name}",
                **(annotations or {}),
            },
            "managedFields": [{"manager": "argocd-controller", "operation": "Apply"}],
        },
        "spec": {
            "schedule": "0 2 * * *",
            "startingDeadlineSeconds": 3600,
            "suspend": True,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "metadata": {"creationTimestamp": None},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 7200,
                    "podFailurePolicy": {
                        "rules": [
                            {
                                "action": "FailJob",
                                "onExitCodes": {"containerName": container["name"], "operator": "In", "values": [2, 4]},
                            }
                        ]
                    },
                    "template": {
                        "metadata": {"labels": {**labels, "mlops.platform/job-reporter": "true"}},
                        "spec": {
                            "serviceAccountName": "mlops",
                            "automountServiceAccountToken": False,
                            "restartPolicy": "Never",
                            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                            "containers": [container],
                            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
                        },
                    },
                },
            },
        },
        "status": {"lastScheduleTime": None},
    }


SCORING = _cronjob(
    "mlops-batch-scoring",
    "batch-scoring",
    {
        "name": "batch-scoring",
        "image": "registry.example.com/mlops-batch-scoring:0123456789ab",
        "command": ["python", "-m", "batch_scoring"],
        "args": ["--as-of=now", "--output=s3://mlops-inference-logs/batch-scores", "--job-id=$(K8S_JOB_NAME)"],
        "env": [
            {"name": "BATCH_SCORING_IN_FLIGHT", "value": "8"},
            {
                "name": "JOBS_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": "mlops-jobs-database", "key": "url"}},
            },
            {"name": "TRITON_GRPC_URL", "value": "mlops-triton:8001"},
            {
                "name": "K8S_JOB_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}},
            },
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    },
)
SHAPES = {
    "default": {
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "6Gi"}},
        "nodeSelector": {},
    },
    "large": {
        "resources": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "8", "memory": "16Gi"}},
        "nodeSelector": {"mlops.platform/node-pool": "training"},
    },
}
TRAINING = _cronjob(
    "mlops-trainer-on-demand",
    "trainer",
    {
        "name": "trainer",
        "image": "registry.example.com/mlops-trainer:0123456789ab",
        "command": ["python", "-m", "trainer"],
        "args": ["--profile=default"],
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlops-mlflow:5000"}],
        "resources": SHAPES["default"]["resources"],
    },
    annotations={kr.PROFILES_ANNOTATION: json.dumps(SHAPES)},
)
SCORE_ARGS = ["--output", "s3://scores/daily", "--job-id", JOB_ID, "--as-of", "2026-11-28T12:00:00+00:00"]


def _score(attempt: int = 1, args: list[str] = SCORE_ARGS) -> JobLaunch:
    return JobLaunch(job_id=JOB_ID, attempt=attempt, kind="score", args=args, env={"MLOPS_JOB_ID": JOB_ID})


def _train(*args: str) -> JobLaunch:
    return JobLaunch(job_id=JOB_ID, attempt=2, kind="train", args=list(args), env={"MLOPS_JOB_ID": JOB_ID})


def _container(job: dict) -> dict:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return container


# -- names ------------------------------------------------------------------------------------------------
def test_the_job_is_named_after_its_cronjob_job_and_attempt() -> None:
    assert job_name("mlops-batch-scoring", JOB_ID, 3) == f"mlops-batch-scoring-{JOB_ID}-3"


def test_a_long_cronjob_name_is_shortened_to_fit_63_characters() -> None:
    # The chart's CronJob names are at most 52 characters; with the suffix that is more than 63.
    name = job_name("a-release-with-a-rather-long-name-trainer-on-demand-x", JOB_ID, 10)
    assert len(name) == 63
    assert name.endswith(f"-{JOB_ID}-10")
    assert "--" not in name
    # A cut that ends in a dash loses it (a name ends alphanumerically).
    assert job_name("x" * 47 + "-yyyyyy", JOB_ID, 1) == "x" * 47 + f"-{JOB_ID}-1"


@pytest.mark.parametrize(("job_id", "attempt"), [("0123456789AB", 1), ("0123", 1), ("../etc/passw", 1), (JOB_ID, 0)])
def test_a_malformed_job_id_or_attempt_is_refused(job_id: str, attempt: int) -> None:
    with pytest.raises(ValueError, match=r"job id|attempt"):
        job_name("mlops-batch-scoring", job_id, attempt)


# -- the Job's manifest -----------------------------------------------------------------------------------
def test_a_scoring_job_runs_the_templates_container_with_the_launchs_arguments() -> None:
    job = job_from_cronjob(SCORING, _score())
    container = _container(job)
    original = SCORING["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "batch_scoring"]
    assert container["args"] == SCORE_ARGS
    assert {k: v for k, v in container.items() if k not in ("args", "env", "terminationMessagePolicy")} == {
        k: v for k, v in original.items() if k not in ("args", "env")
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # The pod runs as the CronJob's pods do: identity, no token, security context, volumes.
    spec = job["spec"]["template"]["spec"]
    template_spec = SCORING["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {k: v for k, v in spec.items() if k != "containers"} == {
        k: v for k, v in template_spec.items() if k != "containers"
    }
    # The CronJob as read is left as it was.
    assert original["args"][-1] == "--job-id=$(K8S_JOB_NAME)"


def test_the_env_keeps_the_templates_and_adds_the_launchs_without_the_job_name_the_old_args_used() -> None:
    env = _container(job_from_cronjob(SCORING, _score()))["env"]
    names = [e["name"] for e in env]
    # K8S_JOB_NAME only fed --job-id=$(K8S_JOB_NAME), which the launch's arguments replace.
    assert names == ["BATCH_SCORING_IN_FLIGHT", "JOBS_DATABASE_URL", "TRITON_GRPC_URL", "MLOPS_JOB_ID"]
    assert env[-1] == {"name": "MLOPS_JOB_ID", "value": JOB_ID}
    assert env[1]["valueFrom"]["secretKeyRef"] == {"name": "mlops-jobs-database", "key": "url"}
    # A downward-API value the new arguments still name stays.
    kept = _container(job_from_cronjob(SCORING, _score(args=["--job-id=$(K8S_JOB_NAME)"])))
    assert "K8S_JOB_NAME" in [e["name"] for e in kept["env"]]


def test_a_launch_variable_replaces_the_templates_of_the_same_name() -> None:
    launch = JobLaunch(job_id=JOB_ID, attempt=1, kind="score", args=SCORE_ARGS, env={"TRITON_GRPC_URL": "other:8001"})
    env = _container(job_from_cronjob(SCORING, launch))["env"]
    assert [e for e in env if e["name"] == "TRITON_GRPC_URL"] == [{"name": "TRITON_GRPC_URL", "value": "other:8001"}]


def test_a_variable_reference_in_the_request_stays_literal() -> None:
    """Kubernetes expands $(NAME) in args and env values: a caller's `$(AWS_SECRET_ACCESS_KEY)` in an S3 path
    must reach the job as written, not as the Secret's value."""
    args = ["--input", "s3://in/$(AWS_SECRET_ACCESS_KEY).csv", "--output", "s3://out/$$x"]
    launch = JobLaunch(job_id=JOB_ID, attempt=1, kind="score", args=args, env={"NOTE": "$(RABBITMQ_URL)"})
    container = _container(job_from_cronjob(SCORING, launch))
    assert container["args"] == ["--input", "s3://in/$$(AWS_SECRET_ACCESS_KEY).csv", "--output", "s3://out/$$$$x"]
    assert container["env"][-1] == {"name": "NOTE", "value": "$$(RABBITMQ_URL)"}


def test_the_job_never_retries_by_itself_and_goes_away_after_a_day() -> None:
    job = job_from_cronjob(SCORING, _score())
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == kr.TTL_SECONDS_AFTER_FINISHED == 86400
    # Without a timeout the template's deadline stays; with one, it is the runner's.
    assert spec["activeDeadlineSeconds"] == 7200
    assert job_from_cronjob(SCORING, _score(), active_deadline_seconds=21900)["spec"]["activeDeadlineSeconds"] == 21900
    # What the template says about failing at once (bad request, model error) stays.
    assert spec["podFailurePolicy"] == SCORING["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]


def test_the_job_and_its_pod_carry_the_job_and_the_attempt() -> None:
    job = job_from_cronjob(SCORING, _score(attempt=2))
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    template_labels = SCORING["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    ours = {kr.JOB_ID_LABEL: JOB_ID, kr.ATTEMPT_LABEL: "2", kr.TRIGGERED_BY_LABEL: "job-worker"}
    # The pod keeps every label of the template (its NetworkPolicies select it by them).
    assert pod_labels == {**template_labels, **ours}
    metadata = job["metadata"]
    assert metadata["name"] == f"mlops-batch-scoring-{JOB_ID}-2"
    assert metadata["namespace"] == NAMESPACE
    assert metadata["labels"] == {
        **SELECTOR,
        "app.kubernetes.io/component": "batch-scoring",
        "app.kubernetes.io/version": "0.1.0",
        "app.kubernetes.io/part-of": "mlops",
        "app.kubernetes.io/managed-by": "job-worker",
        **ours,
    }
    # Nothing of the CronJob's own metadata that would make Argo CD or Helm think the Job is theirs.
    assert metadata["annotations"] == {}
    assert metadata["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "CronJob", "name": "mlops-batch-scoring", "uid": UID}
    ]
    assert "controller" not in metadata["ownerReferences"][0]
    assert set(job) == {"apiVersion", "kind", "metadata", "spec"}


def test_the_cronjob_is_left_unchanged() -> None:
    before = copy.deepcopy(SCORING)
    job_from_cronjob(SCORING, _score())
    job_from_cronjob(TRAINING, _train("--profile", "large"))
    assert before == SCORING


def test_a_template_without_the_jobs_module_is_refused() -> None:
    with pytest.raises(TemplateError, match="python -m trainer"):
        job_from_cronjob(SCORING, _train("--profile", "default"))


@pytest.mark.parametrize(
    "args", [["--profile", "large"], ["--profile=large"], ["--profile", "default", "--profile=large"]]
)
def test_a_training_job_gets_its_profiles_pod_shape(args: list[str]) -> None:
    job = job_from_cronjob(TRAINING, _train(*args, "--param", "max_iter=500"))
    assert _container(job)["resources"] == SHAPES["large"]["resources"]
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"mlops.platform/node-pool": "training"}
    assert _container(job)["args"] == [*args, "--param", "max_iter=500"]


def test_a_training_job_without_a_profile_gets_the_default_ones_shape() -> None:
    """Shaped like the profile the trainer will use: `default` when none is named, whatever trainer.profile
    shaped the template for; a profile without a nodeSelector drops the template's."""
    template = copy.deepcopy(TRAINING)
    template["spec"]["jobTemplate"]["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "x"}
    job = job_from_cronjob(template, _train("--tag", "job_id=0123456789ab"))
    assert _container(job)["resources"] == SHAPES["default"]["resources"]
    assert "nodeSelector" not in job["spec"]["template"]["spec"]


def test_a_profile_the_chart_has_no_shape_for_is_a_bad_request() -> None:
    with pytest.raises(UnknownProfileError, match=r"'huge'.*default, large"):
        job_from_cronjob(TRAINING, _train("--profile", "huge"))


def test_profile_of_reads_the_argument_as_argparse_does() -> None:
    assert profile_of([]) == "default"
    assert profile_of(["--profile", "small", "--seed", "3"]) == "small"
    assert profile_of(["--profile=large"]) == "large"
    assert profile_of(["--profile", "small", "--profile=large"]) == "large"


# -- the outcome ------------------------------------------------------------------------------------------
def _job(*conditions: tuple[str, str]) -> dict:
    """A Job as read back: (type, reason) conditions with status True, plus the transitional ones."""
    return {
        "metadata": {"name": f"mlops-batch-scoring-{JOB_ID}-1", "namespace": NAMESPACE},
        "status": {
            "active": 0 if conditions else 1,
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": {
                        "BackoffLimitExceeded": "Job has reached the specified backoff limit",
                        "DeadlineExceeded": "Job was active longer than specified deadline",
                        "PodFailurePolicy": "Container batch-scoring for pod mlops/x failed with exit code 2",
                    }.get(reason, ""),
                    "lastTransitionTime": "2026-11-28T12:10:00Z",
                }
                for kind, reason in conditions
            ],
        },
    }


def _pod(
    created: str,
    *,
    exit_code: int | None = None,
    reason: str = "Error",
    message: str = "",
    status: dict | None = None,
) -> dict:
    state = (
        {"running": {"startedAt": created}}
        if exit_code is None
        else {"terminated": {"exitCode": exit_code, "reason": reason, "message": message, "finishedAt": created}}
    )
    return {
        "metadata": {"name": f"mlops-batch-scoring-{JOB_ID}-1-{created[-3:-1]}", "creationTimestamp": created},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "batch-scoring", "ready": False, "restartCount": 0, "state": state},
                {"name": "sidecar", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            ],
            **(status or {}),
        },
    }


def test_a_running_job_has_no_outcome_yet() -> None:
    running = _job()
    running["status"]["conditions"] = [{"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"}]
    assert outcome(running, [_pod("2026-11-28T12:00:00Z")], "batch-scoring") is None
    suspended = _job(("Suspended", "JobSuspended"))
    assert outcome(suspended, [], "batch-scoring") is None


def test_a_complete_job_exits_0() -> None:
    assert outcome(_job(("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "")), [], "batch-scoring") == 0


@pytest.mark.parametrize("code", [2, 3, 4, 1, 143])
def test_a_failed_job_exits_with_its_containers_code(code: int) -> None:
    pods = [_pod("2026-11-28T12:00:00Z", exit_code=code)]
    assert outcome(_job(("Failed", "BackoffLimitExceeded")), pods, "batch-scoring") == code


def test_the_newest_ended_pod_tells_the_exit_code() -> None:
    pods = [
        _pod("2026-11-28T12:05:00Z", exit_code=4),
        _pod("2026-11-28T12:00:00Z", exit_code=3),
        _pod("2026-11-28T12:06:00Z"),  # never ran to an end
    ]
    assert outcome(_job(("Failed", "BackoffLimitExceeded")), pods, "batch-scoring") == 4


def test_a_job_past_its_deadline_is_not_retried() -> None:
    """Killed by its own activeDeadlineSeconds (SIGTERM, 143): a timeout, which would come again."""
    pods = [_pod("2026-11-28T12:00:00Z", exit_code=143)]
    assert outcome(_job(("Failed", "DeadlineExceeded")), pods, "batch-scoring") == 1


def test_an_evicted_pod_counts_as_killed_and_an_unknown_end_as_a_failure() -> None:
    evicted = _pod("2026-11-28T12:00:00Z", status={"reason": "Evicted", "message": "The node was low on memory."})
    assert outcome(_job(("Failed", "BackoffLimitExceeded")), [evicted], "batch-scoring") == EXIT_DISRUPTED == 137
    preempted = _pod("2026-11-28T12:00:00Z", status={"conditions": [{"type": "DisruptionTarget", "status": "True"}]})
    assert outcome(_job(("Failed", "BackoffLimitExceeded")), [preempted], "batch-scoring") == 137
    # No pod left, or a pod that says nothing: failed, not retried.
    assert outcome(_job(("Failed", "BackoffLimitExceeded")), [], "batch-scoring") == 1
    assert outcome(_job(("Failed", "BackoffLimitExceeded")), [_pod("2026-11-28T12:00:00Z")], "batch-scoring") == 1


def test_the_failure_message_says_why_with_the_end_of_the_jobs_output() -> None:
    output = "Traceback (most recent call last):\n...\nValueError: input s3://in/x.csv has no SK_ID_CURR column\n"
    pods = [_pod("2026-11-28T12:00:00Z", exit_code=2, message=output)]
    message = failure_message(_job(("Failed", "PodFailurePolicy")), pods, "batch-scoring")
    assert f"Job mlops-batch-scoring-{JOB_ID}-1: PodFailurePolicy: Container batch-scoring" in message
    assert "container batch-scoring: Error, exit code 2" in message
    assert message.endswith("ValueError: input s3://in/x.csv has no SK_ID_CURR column")
    evicted = _pod("2026-11-28T12:00:00Z", status={"reason": "Evicted", "message": "The node was low on memory."})
    assert "Evicted: The node was low on memory." in failure_message(
        _job(("Failed", "BackoffLimitExceeded")), [evicted], "batch-scoring"
    )
    long = _pod("2026-11-28T12:00:00Z", exit_code=1, message="x" * 5000 + "the end")
    message = failure_message(_job(("Failed", "BackoffLimitExceeded")), [long], "batch-scoring")
    assert len(message) == kr.MESSAGE_MAX_CHARS
    assert message.endswith("the end")


def test_a_next_attempt_stops_the_running_jobs_of_earlier_ones() -> None:
    """A worker killed mid-job leaves its Job running; the next attempt deletes it (and only unfinished ones)."""
    current = f"mlops-batch-scoring-{JOB_ID}-3"

    def named(name: str, *conditions: tuple[str, str]) -> dict:
        job = _job(*conditions)
        job["metadata"]["name"] = name
        return job

    jobs = [
        named(f"mlops-batch-scoring-{JOB_ID}-2"),
        named(f"mlops-batch-scoring-{JOB_ID}-1", ("Failed", "BackoffLimitExceeded")),
        named(current),
    ]
    assert kr.earlier_attempts(jobs, current) == [f"mlops-batch-scoring-{JOB_ID}-2"]
    assert kr.earlier_attempts([named(current)], current) == []


@pytest.mark.parametrize(
    ("status", "code"), [(None, 3), (0, 3), (429, 3), (500, 3), (503, 3), (403, 1), (404, 1), (422, 1)]
)
def test_api_errors_are_retried_only_when_a_later_call_may_succeed(status: int | None, code: int) -> None:
    assert attempt_fate(status) == code


async def test_an_attempt_that_could_not_start_reports_its_code_and_reason() -> None:
    run = FinishedRun(2, "training profile 'huge' is not one the chart renders pods for (default)")
    assert await run.wait() == 2
    await run.cancel()
    await run.cancel()
    assert "huge" in await run.error_output()


# -- the rights the calls need ----------------------------------------------------------------------------
def _client_calls() -> set[str]:
    """Every Kubernetes client method the module calls (`*_namespaced_*` attributes)."""
    tree = ast.parse(inspect.getsource(kr))
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and "_namespaced_" in node.attr}


def test_every_api_call_is_listed_with_the_right_it_needs() -> None:
    assert _client_calls() == set(kr.CLIENT_CALLS)
    assert {
        ("batch", "cronjobs"): {"get"},
        ("batch", "jobs"): {"create", "get", "delete", "list"},
        ("", "pods"): {"list"},
    } == kr.API_RIGHTS
