"""The Job the monitor creates (monitor.retraining.job_from_cronjob) from the chart's retrain CronJob,
as the API server hands that CronJob back, is a valid Kubernetes 1.31 Job, runs the trainer as a
challenger with the trigger's tags, and falls under the trainer's NetworkPolicy."""

import copy
import inspect
import json
import re

import chart_invariants as inv
import pytest
from chart_tools import NAMESPACE, Doc, validate_builtin_kinds

from monitor.retraining import TRIGGERED_BY_LABEL, KubernetesLauncher, job_from_cronjob

RETRAINING = "08-monitor-retraining"
UID = "0b6c3b1e-8c4f-4f4e-9a57-2f4b1c7d9e10"
TAGS = {"retraining.reason": "drift", "retraining.drift_streak": "4"}


def _as_served(docs: list[Doc]) -> Doc:
    """The rendered retrain CronJob with what the API server adds and the launcher relies on."""
    cronjob = copy.deepcopy(
        next(d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"].endswith("-retrain"))
    )
    cronjob["metadata"].update(uid=UID, namespace=NAMESPACE)
    return cronjob


@pytest.fixture(scope="module")
def cronjob(rendered: dict[str, list[Doc]]) -> Doc:
    return _as_served(rendered[RETRAINING])


def _job(cronjob: Doc) -> Doc:
    # Named as KubernetesLauncher.start names it: the CronJob's name (40 at most), -auto-, %m%d%H%M%S.
    return job_from_cronjob(cronjob, f"{cronjob['metadata']['name'][:40]}-auto-1231235959", TAGS)


def test_the_job_is_valid_kubernetes(cronjob: Doc) -> None:
    job = _job(cronjob)
    assert validate_builtin_kinds({"retraining job": [job]}) == []
    # A name the API server accepts for a Job (a DNS label: its pods' job-name label carries it).
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", job["metadata"]["name"])


def test_the_validation_has_teeth(cronjob: Doc) -> None:
    """The same validation rejects a broken body: a misspelt field, a wrong type, an owner without uid."""
    misspelt = _job(cronjob)
    misspelt["spec"]["backofLimit"] = misspelt["spec"].pop("backoffLimit")
    wrong_type = _job(cronjob)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["args"] = "--no-promote"
    no_uid = _job(cronjob)
    del no_uid["metadata"]["ownerReferences"][0]["uid"]
    problems = validate_builtin_kinds({"misspelt": [misspelt], "wrong type": [wrong_type], "no uid": [no_uid]})
    assert [p.split(":")[0] for p in problems] == ["misspelt", "wrong type", "no uid"], problems


def test_the_job_runs_the_cronjobs_trainer_as_a_challenger(cronjob: Doc) -> None:
    job = _job(cronjob)
    template = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": cronjob["metadata"]["name"],
            "uid": UID,
            "controller": True,
        }
    ]
    assert job["metadata"]["labels"][TRIGGERED_BY_LABEL] == "monitor"
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (
        template["backoffLimit"],
        template["activeDeadlineSeconds"],
    )
    [trainer] = job["spec"]["template"]["spec"]["containers"]
    [original] = template["template"]["spec"]["containers"]
    assert trainer["command"] == original["command"] == ["python", "-m", "trainer"]
    assert trainer["args"] == [
        *original.get("args", []),
        "--no-promote",
        "--tag=retraining.drift_streak=4",
        "--tag=retraining.reason=drift",
    ]
    assert {k: v for k, v in trainer.items() if k != "args"} == {k: v for k, v in original.items() if k != "args"}
    # The pod runs as the trainer's pods do: the platform's identity, no token, same security context.
    spec, original_spec = job["spec"]["template"]["spec"], template["template"]["spec"]
    assert {k: v for k, v in spec.items() if k != "containers"} == {
        k: v for k, v in original_spec.items() if k != "containers"
    }
    assert spec["automountServiceAccountToken"] is False
    # The CronJob as the chart rendered it is left untouched.
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0] == original


def test_the_trainers_network_policy_selects_the_jobs_pods(rendered: dict[str, list[Doc]], cronjob: Doc) -> None:
    docs = rendered[RETRAINING]
    labels = _job(cronjob)["spec"]["template"]["metadata"]["labels"]
    assert labels[TRIGGERED_BY_LABEL] == "monitor"
    policies = {
        d["metadata"]["name"]: d["spec"]["podSelector"]["matchLabels"] for d in docs if d["kind"] == "NetworkPolicy"
    }
    selecting = {name for name, selector in policies.items() if all(labels.get(k) == v for k, v in selector.items())}
    # The release's default deny, then the trainer's egress to S3 and MLflow, and nothing else.
    assert selecting == {"mlops-default-deny", "mlops-trainer"}
    # MinIO and MLflow let the trainer's pods in, these included.
    for name in ("mlops-minio", "mlops-mlflow"):
        policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)
        peers = [peer["podSelector"]["matchLabels"] for peer in policy["spec"]["ingress"][0]["from"]]
        assert any(all(labels.get(k) == v for k, v in peer.items()) for peer in peers), name


def test_the_job_joins_the_release_unbroken(rendered: dict[str, list[Doc]], cronjob: Doc) -> None:
    """The Job adds no problem to the release's invariants (env, images, selectors, RBAC, ...); the sync
    waves left aside: they order what Argo CD applies, and Argo CD never applies this Job."""
    release = rendered[RETRAINING]
    with_job = [*release, _job(cronjob)]
    checks = [check for check in inv.ALL_CHECKS if check is not inv.sync_wave_problems]
    before = {problem for check in checks for problem in check(release)}
    assert [problem for check in checks for problem in check(with_job) if problem not in before] == []
    assert inv.namespace_problems(with_job, NAMESPACE) == []


def test_the_launcher_posts_this_job_through_the_kubernetes_client(cronjob: Doc) -> None:
    """KubernetesLauncher.start end to end through the real client (models, serialization), the API
    server stood in for: the CronJob read back as the client's model, the Job POSTed as built above."""
    from kubernetes.client import ApiClient, BatchV1Api

    client = ApiClient()
    sent: dict[str, object] = {}

    def call_api(*args: object, **kwargs: object) -> object:
        sent.update(inspect.signature(ApiClient.call_api).bind(client, *args, **kwargs).arguments)
        raise ConnectionError("no API server here")

    client.call_api = call_api  # type: ignore[method-assign]
    batch = BatchV1Api(client)
    served = client.deserialize(json.dumps(cronjob), "V1CronJob", "application/json")
    batch.read_namespaced_cron_job = lambda name, namespace: served  # type: ignore[method-assign]
    launcher = KubernetesLauncher(cronjob["metadata"]["name"], NAMESPACE, batch)
    with pytest.raises(ConnectionError):
        launcher.start(TAGS)
    assert (sent["method"], sent["url"]) == ("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")
    body = sent["body"]
    assert isinstance(body, dict)
    assert body == job_from_cronjob(cronjob, body["metadata"]["name"], TAGS)
    assert validate_builtin_kinds({"posted": [body]}) == []
