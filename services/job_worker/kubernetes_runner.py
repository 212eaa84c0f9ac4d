"""The cluster's runner (``JOB_RUNNER=kubernetes``): each attempt of a job is a Kubernetes Job made from the
jobTemplate of one of the chart's suspended CronJobs (``JOB_TEMPLATE_SCORE``: the batch-scoring CronJob,
``JOB_TEMPLATE_TRAIN``: the trainer's on-demand CronJob), so the attempt runs with the image, identity,
security context, resources and NetworkPolicy the chart gave that CronJob's pods.

    start:  read the CronJob -> job_from_cronjob() -> create the Job ``<cronjob>-<job id>-<attempt>``
            (it exists already: the same attempt was started before, so it is followed, not created again);
            a Job of an earlier attempt still running (its worker was killed) is deleted first
    wait:   read the Job every few seconds until it is Complete or Failed -> outcome(): the exit code of
            the job's container (0 when Complete), its reason from failure_message()
    cancel: delete the Job (propagation Background: its pod goes too)

The Job never retries by itself (``backoffLimit: 0``): the worker owns the retries and counts them in the
job's row. The worker's ServiceAccount may make exactly the calls listed in ``CLIENT_CALLS`` (the chart's
Role grants ``API_RIGHTS``; tests/charts compare the two and this module's calls).

The manifest and the outcome are plain functions over the API's JSON (tested with the chart's rendered
CronJobs in tests/job_worker and tests/charts); the API calls themselves are not tested: there is no
Kubernetes API server on the development machine.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from job_worker.runners import MODULES, JobLaunch
from mlops_common.jobs import EXIT_BAD_REQUEST, EXIT_DEPENDENCY_UNAVAILABLE, JOB_ID_PATTERN
from mlops_common.training_profiles import DEFAULT_PROFILE

log = logging.getLogger(__name__)

# The worker's calls: client method -> (API group, resource, verb) the Role must grant.
CLIENT_CALLS = {
    "read_namespaced_cron_job": ("batch", "cronjobs", "get"),
    "create_namespaced_job": ("batch", "jobs", "create"),
    "read_namespaced_job": ("batch", "jobs", "get"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "list_namespaced_pod": ("", "pods", "list"),
}
# (API group, resource) -> verbs: what the chart's Role for the worker grants (cronjobs by resourceNames).
API_RIGHTS: dict[tuple[str, str], set[str]] = {}
for _group, _resource, _verb in CLIENT_CALLS.values():
    API_RIGHTS.setdefault((_group, _resource), set()).add(_verb)

JOB_ID_LABEL = "mlops.platform/job-id"
ATTEMPT_LABEL = "mlops.platform/job-attempt"
TRIGGERED_BY_LABEL = "mlops.platform/triggered-by"
# Set by Kubernetes on a Job's pods (1.27+).
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# On the trainer's on-demand CronJob: {profile: {"resources": ..., "nodeSelector": ...}} as JSON, what the chart
# gives a trainer pod of each training profile (the template itself is shaped for `trainer.profile`).
PROFILES_ANNOTATION = "mlops.platform/training-profiles"

JOB_ID = re.compile(JOB_ID_PATTERN)
MAX_NAME = 63  # a Job's name is a pod label value (job-name): 63 characters at most
# A finished Job stays this long (its pod's logs with it: `kubectl logs job/<name>`), then Kubernetes deletes it.
TTL_SECONDS_AFTER_FINISHED = 86_400
# The Job's own deadline lies this far past the worker's timeout: the worker stops an attempt first (and fails
# the job); the Job's deadline only stops one whose worker is gone.
DEADLINE_MARGIN_S = 300
POLL_INTERVAL_S = 5.0
REQUEST_TIMEOUT_S = 30
MESSAGE_MAX_CHARS = 2000

EXIT_FAILED = 1  # a failure whose exit code is unknown, or the worker's own problem with the Job
# A pod that was taken away (evicted, preempted, its node lost) before its container ended: reported as a
# process killed by SIGKILL, which the worker retries as it does a killed local process.
EXIT_DISRUPTED = 137
# API answers after which the same call may succeed later (the attempt is then retried).
TRANSIENT_STATUSES = {0, 408, 429, 500, 502, 503, 504}


class TemplateError(ValueError):
    """The CronJob cannot make this job's Job (no container runs the job's module): a deployment problem."""


class UnknownProfileError(ValueError):
    """A training profile the chart's CronJob has no pod shape for: a bad request."""


# -- the pure part: names, manifests, outcomes ------------------------------------------------------------
def job_name(cronjob_name: str, job_id: str, attempt: int) -> str:
    """``<cronjob>-<job id>-<attempt>``, the CronJob's part shortened to keep it within 63 characters."""
    if not JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r}: 12 lowercase hexadecimal characters expected")
    if attempt < 1:
        raise ValueError(f"attempt {attempt}: attempts count from 1")
    suffix = f"-{job_id}-{attempt}"
    return cronjob_name[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def _literal(text: str) -> str:
    """``text`` as Kubernetes passes it on: `$(NAME)` in args and env values would expand another variable
    (a Secret's included); `$$` is Kubernetes' escape for one `$`."""
    return text.replace("$", "$$")


def _argv_references(container: dict[str, Any]) -> str:
    return " ".join(str(part) for part in container.get("command", []) + container.get("args", []))


def profile_of(args: list[str]) -> str:
    """The training profile ``python -m trainer`` runs with these arguments (argparse: the last one wins)."""
    profile = DEFAULT_PROFILE
    for index, arg in enumerate(args):
        if arg == "--profile" and index + 1 < len(args):
            profile = args[index + 1]
        elif arg.startswith("--profile="):
            profile = arg.partition("=")[2]
    return profile


def job_container(pod_spec: dict[str, Any], kind: str) -> dict[str, Any]:
    """The container of a pod template that runs the job's module (`python -m batch_scoring` / `trainer`)."""
    module = MODULES[kind]
    for container in pod_spec.get("containers", []):
        if container.get("command", [])[:3] == ["python", "-m", module]:
            return container
    raise TemplateError(f"no container of the template runs `python -m {module}`")


def job_from_cronjob(
    cronjob: dict[str, Any],
    launch: JobLaunch,
    *,
    ttl_seconds_after_finished: int = TTL_SECONDS_AFTER_FINISHED,
    active_deadline_seconds: int | None = None,
) -> dict[str, Any]:
    """The Job of one attempt: the CronJob's jobTemplate with the job container's arguments replaced by the
    launch's, its environment extended by the launch's, no retries of its own, and labels naming the job.
    For a training job, the pod gets the resources and nodeSelector the chart rendered for its profile.
    ``cronjob`` is the CronJob as the API server returns it (``metadata.uid`` set); it is left unchanged."""
    metadata = cronjob["metadata"]
    name = job_name(metadata["name"], launch.job_id, launch.attempt)
    template = cronjob["spec"]["jobTemplate"]
    spec = copy.deepcopy(template["spec"])
    pod = spec["template"]
    pod_spec = pod["spec"]
    container = job_container(pod_spec, launch.kind)

    before = _argv_references(container)
    container["args"] = [_literal(arg) for arg in launch.args]
    after = _argv_references(container)
    env = [
        var
        for var in container.get("env", [])
        # Downward-API values that only fed the template's own arguments (--job-id=$(K8S_JOB_NAME)).
        if not (
            "fieldRef" in var.get("valueFrom", {})
            and f"$({var['name']})" in before
            and f"$({var['name']})" not in after
        )
        and var["name"] not in launch.env
    ]
    env += [{"name": key, "value": _literal(value)} for key, value in launch.env.items()]
    container["env"] = env
    # The end of the job's output becomes the container's termination message: the job's error, for its row,
    # without rights to read pod logs.
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"

    if launch.kind == "train":
        shapes = json.loads(metadata.get("annotations", {}).get(PROFILES_ANNOTATION, "{}"))
        if shapes:
            profile = profile_of(launch.args)
            if profile not in shapes:
                raise UnknownProfileError(
                    f"training profile {profile!r} is not one the chart renders pods for ({', '.join(sorted(shapes))})"
                )
            container["resources"] = shapes[profile]["resources"]
            pod_spec.pop("nodeSelector", None)
            if shapes[profile].get("nodeSelector"):
                pod_spec["nodeSelector"] = shapes[profile]["nodeSelector"]

    job_labels = {
        JOB_ID_LABEL: launch.job_id,
        ATTEMPT_LABEL: str(launch.attempt),
        TRIGGERED_BY_LABEL: "job-worker",
    }
    pod.setdefault("metadata", {})
    pod["metadata"]["labels"] = {**pod["metadata"].get("labels", {}), **job_labels}
    identity = {
        key: value
        for key, value in {**template.get("metadata", {}).get("labels", {}), **pod["metadata"]["labels"]}.items()
        if key.startswith("app.kubernetes.io/") and key != "app.kubernetes.io/managed-by"
    }
    spec["backoffLimit"] = 0  # the worker retries, and counts the attempts in the job's row
    spec["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "labels": {**identity, "app.kubernetes.io/managed-by": "job-worker", **job_labels},
            "annotations": {**template.get("metadata", {}).get("annotations", {})},
            # Deleted with its CronJob (jobs turned off, the release uninstalled); not its controller, so the
            # CronJob's history limits leave it to the worker and to ttlSecondsAfterFinished.
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "CronJob", "name": metadata["name"], "uid": metadata["uid"]}
            ],
        },
        "spec": spec,
    }


def finished(job: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` once the Job has ended, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"]
    return None


def _failed_condition(job: dict[str, Any]) -> dict[str, Any]:
    conditions = (job.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Failed" and c.get("status") == "True"), {})


def _container_status(pod: dict[str, Any], container: str) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == container), {})


def _terminated(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    return (_container_status(pod, container).get("state") or {}).get("terminated")


def _last_pod(pods: list[dict[str, Any]], container: str) -> dict[str, Any] | None:
    """The pod that tells how the Job ended: the newest whose job container terminated, else the newest."""
    ordered = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    ended = [pod for pod in ordered if _terminated(pod, container) is not None]
    return (ended or ordered or [None])[-1]


def _disrupted(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("reason") in ("Evicted", "Preempting", "NodeLost", "Terminated") or any(
        c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def outcome(job: dict[str, Any], pods: list[dict[str, Any]], container: str) -> int | None:
    """The attempt's exit code once the Job has ended (None before): 0 when Complete; when Failed the job
    container's exit code, ``EXIT_DISRUPTED`` (137) for a pod taken away before it ended, ``EXIT_FAILED`` (1)
    when the Job ran out of time (its deadline: not retried) or nothing tells how it ended."""
    state = finished(job)
    if state is None:
        return None
    if state == "Complete":
        return 0
    if _failed_condition(job).get("reason") == "DeadlineExceeded":
        return EXIT_FAILED
    pod = _last_pod(pods, container)
    if pod is None:
        return EXIT_FAILED
    terminated = _terminated(pod, container)
    if terminated is not None and terminated.get("exitCode"):
        return int(terminated["exitCode"])
    if terminated is None and _disrupted(pod):
        return EXIT_DISRUPTED
    return EXIT_FAILED


def failure_message(job: dict[str, Any], pods: list[dict[str, Any]], container: str) -> str:
    """Why the Job failed, for the job's row: the Job's condition, the pod's and the container's reasons, and
    the end of the job's output (the container's termination message)."""
    parts = []
    condition = _failed_condition(job)
    if condition:
        parts.append(
            f"Job {job['metadata']['name']}: {condition.get('reason', 'Failed')}: {condition.get('message', '')}"
        )
    pod = _last_pod(pods, container)
    if pod is not None:
        status = pod.get("status") or {}
        if status.get("reason") or status.get("message"):
            parts.append(f"pod {pod['metadata']['name']}: {status.get('reason', '')}: {status.get('message', '')}")
        terminated = _terminated(pod, container)
        if terminated is not None:
            parts.append(
                f"container {container}: {terminated.get('reason', '')}, exit code {terminated.get('exitCode')}"
            )
            if terminated.get("message"):
                parts.append(terminated["message"].strip())
    return "\n".join(parts)[-MESSAGE_MAX_CHARS:]


def earlier_attempts(jobs: list[dict[str, Any]], name: str) -> list[str]:
    """The Jobs of the same job (listed by its job-id label) that still run and are not this attempt's ``name``:
    a worker killed mid-job leaves its Job running; the next attempt stops it, so one attempt writes at a time."""
    return sorted(job["metadata"]["name"] for job in jobs if job["metadata"]["name"] != name and finished(job) is None)


def attempt_fate(status: int | None) -> int:
    """The exit code an API error stands for: retried (3) when a later call may succeed, else failed (1)."""
    return EXIT_DEPENDENCY_UNAVAILABLE if status is None or status in TRANSIENT_STATUSES else EXIT_FAILED


# -- the API calls ----------------------------------------------------------------------------------------
class FinishedRun:
    """An attempt that ended before it started (the Job could not be made): its exit code and reason."""

    def __init__(self, exit_code: int, message: str) -> None:
        self.exit_code = exit_code
        self.message = message

    async def wait(self) -> int:
        return self.exit_code

    async def cancel(self) -> None:
        return None

    async def error_output(self) -> str:
        return self.message


class KubernetesRun:
    """One Job, followed by reading it (``get``) until it ends."""

    def __init__(self, runner: KubernetesRunner, name: str, container: str) -> None:
        self.runner = runner
        self.name = name
        self.container = container
        self.message = ""

    async def wait(self) -> int:
        runner = self.runner
        while True:
            try:
                job = await runner.call(runner.batch.read_namespaced_job, self.name, runner.namespace)
            except runner.api_errors as err:
                if getattr(err, "status", None) == 404:
                    self.message = f"Job {runner.namespace}/{self.name} was deleted before it ended"
                    return EXIT_FAILED
                log.warning("could not read Job %s (%s); trying again", self.name, _short(err))
                await asyncio.sleep(runner.poll_interval_s)
                continue
            if finished(job) is not None:
                pods = await self._pods()
                self.message = failure_message(job, pods, self.container)
                code = outcome(job, pods, self.container)
                return EXIT_FAILED if code is None else code
            await asyncio.sleep(runner.poll_interval_s)

    async def _pods(self) -> list[dict[str, Any]]:
        runner = self.runner
        try:
            pods = await runner.call(
                runner.core.list_namespaced_pod, runner.namespace, label_selector=f"{JOB_NAME_LABEL}={self.name}"
            )
        except runner.api_errors as err:
            log.warning("could not list the pods of Job %s (%s): its exit code is unknown", self.name, _short(err))
            return []
        return pods.get("items") or []

    async def cancel(self) -> None:
        runner = self.runner
        for _ in range(3):
            try:
                await runner.call(
                    runner.batch.delete_namespaced_job,
                    self.name,
                    runner.namespace,
                    propagation_policy="Background",
                )
                log.info("deleted Job %s", self.name)
                return
            except runner.api_errors as err:
                if getattr(err, "status", None) == 404:
                    return
                log.warning("could not delete Job %s (%s)", self.name, _short(err))
                await asyncio.sleep(1)
        log.error("Job %s was not deleted: its activeDeadlineSeconds stops it", self.name)

    async def error_output(self) -> str:
        return self.message


def _short(err: BaseException) -> str:
    status = getattr(err, "status", None)
    return f"{status} {getattr(err, 'reason', '')}".strip() if status is not None else repr(err)


class KubernetesRunner:
    """Each attempt as a Job from the CronJob ``templates[kind]`` in ``namespace``, through the official
    Kubernetes client (blocking calls, run in threads) with the pod's ServiceAccount (or a kubeconfig)."""

    def __init__(
        self,
        namespace: str,
        templates: dict[str, str],
        *,
        timeout_s: float | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        api_client: Any = None,
    ) -> None:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()  # outside a cluster: the current kubeconfig context
            api_client = client.ApiClient()
        self.namespace = namespace
        self.templates = templates
        self.deadline_s = None if timeout_s is None else int(timeout_s) + DEADLINE_MARGIN_S
        self.poll_interval_s = poll_interval_s
        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.api_errors: tuple[type[BaseException], ...] = (ApiException, HTTPError, OSError)

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A client call in a thread, its answer as the API's JSON (camelCase keys, as kubectl shows it)."""
        answer = await asyncio.to_thread(method, *args, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
        return self.api_client.sanitize_for_serialization(answer)

    async def start(self, launch: JobLaunch) -> FinishedRun | KubernetesRun:
        template = self.templates.get(launch.kind)
        if not template:
            return FinishedRun(
                EXIT_FAILED, f"no Job template for {launch.kind} jobs (JOB_TEMPLATE_{launch.kind.upper()})"
            )
        name = job_name(template, launch.job_id, launch.attempt)
        try:
            cronjob = await self.call(self.batch.read_namespaced_cron_job, template, self.namespace)
        except self.api_errors as err:
            return FinishedRun(
                attempt_fate(getattr(err, "status", None)),
                f"could not read the Job template, CronJob {self.namespace}/{template} ({_short(err)})",
            )
        try:
            body = job_from_cronjob(cronjob, launch, active_deadline_seconds=self.deadline_s)
            container = job_container(body["spec"]["template"]["spec"], launch.kind)["name"]
        except UnknownProfileError as err:
            return FinishedRun(EXIT_BAD_REQUEST, str(err))
        except TemplateError as err:
            return FinishedRun(EXIT_FAILED, f"CronJob {self.namespace}/{template}: {err}")
        await self._stop_earlier_attempts(launch, name)
        try:
            await self.call(self.batch.create_namespaced_job, self.namespace, body)
            log.info("job %s attempt %d: created Job %s", launch.job_id, launch.attempt, name)
        except self.api_errors as err:
            if getattr(err, "status", None) != 409:
                return FinishedRun(
                    attempt_fate(getattr(err, "status", None)),
                    f"could not create Job {self.namespace}/{name} ({_short(err)}): {getattr(err, 'body', '') or ''}"[
                        :MESSAGE_MAX_CHARS
                    ],
                )
            # This very attempt was started before (the worker restarted): follow that Job.
            log.info("job %s attempt %d: Job %s exists already; following it", launch.job_id, launch.attempt, name)
        return KubernetesRun(self, name, container)

    async def _stop_earlier_attempts(self, launch: JobLaunch, name: str) -> None:
        try:
            jobs = await self.call(
                self.batch.list_namespaced_job, self.namespace, label_selector=f"{JOB_ID_LABEL}={launch.job_id}"
            )
        except self.api_errors as err:
            log.warning("job %s: could not list its earlier Jobs (%s)", launch.job_id, _short(err))
            return
        for other in earlier_attempts(jobs.get("items") or [], name):
            log.warning(
                "job %s attempt %d: deleting Job %s of an earlier attempt", launch.job_id, launch.attempt, other
            )
            await KubernetesRun(self, other, "").cancel()
