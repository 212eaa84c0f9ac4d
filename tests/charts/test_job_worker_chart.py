"""Jobs on demand in the chart (issue #15, `jobs.enabled`): the job worker, its least-privilege Role, the
CronJobs it makes Jobs from (job_worker.kubernetes_runner, fed the chart's own rendered CronJobs here), the jobs
database (its URL Secret and the Job that creates it), the BFF's jobs API settings, and the NetworkPolicies of
that data flow. Off by default; the scenario below turns it on over ci/01. Everything is render-level (helm
template, kubernetes-validate, checkov): no Kubernetes API server here."""

import ast
import copy
import inspect
import ipaddress
import json
import os
import re
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import chart_invariants as inv
import pytest
import yaml
from chart_tools import (
    CHART,
    CI_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    REPO,
    Doc,
    HelmError,
    helm_template,
    python_service,
    run,
    tool,
    validate_builtin_kinds,
    validate_custom_resources,
)
from test_security_scan import EXPLAINED

from job_worker import kubernetes_runner as kr
from job_worker.runners import JobLaunch
from mlops_common.jobs import ScoreJobRequest, TrainJobRequest

DEFAULT = CI_VALUES[0]
JOBS_VALUES = {
    "jobs": {"enabled": True},
    "bff": {"apiKeys": {"required": True, "existingSecret": "mlops-api-keys"}},
}
COMPONENT = "app.kubernetes.io/component"
WORKER = "mlops-job-worker"
SCORE_TEMPLATE = "mlops-batch-scoring"
TRAIN_TEMPLATE = "mlops-trainer-on-demand"
UID = "5e0c3f8a-1d2b-4c5e-9f60-7a8b9c0d1e2f"
JOB_ID = "a1b2c3d4e5f6"
PROFILES = yaml.safe_load((CHART / "files" / "training-profiles.yaml").read_text())["profiles"]


@pytest.fixture(scope="module")
def jobs_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jobs") / "jobs-values.yaml"
    path.write_text(yaml.safe_dump(JOBS_VALUES))
    return path


@pytest.fixture(scope="module")
def render_jobs(render: Callable[..., list[Doc]], jobs_values: Path) -> Callable[..., list[Doc]]:
    """ci/01 with jobs on, plus `--set` values."""

    def _render(values: dict[str, object] | None = None) -> list[Doc]:
        return render(values, value_files=(jobs_values,))

    return _render


@pytest.fixture(scope="module")
def docs(render_jobs: Callable[..., list[Doc]]) -> list[Doc]:
    return render_jobs()


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in the render"
    return found[0]


def _pod_template(doc: Doc) -> Doc:
    return doc["spec"]["jobTemplate"]["spec"]["template"] if doc["kind"] == "CronJob" else doc["spec"]["template"]


def _container(doc: Doc, name: str | None = None) -> Doc:
    containers = _pod_template(doc)["spec"]["containers"]
    return next(c for c in containers if name is None or c["name"] == name)


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def _served(cronjob: Doc) -> Doc:
    """A rendered CronJob as the API server hands it back (what the runner reads)."""
    served = copy.deepcopy(cronjob)
    served["metadata"].update(
        uid=UID, namespace=NAMESPACE, resourceVersion="1", creationTimestamp="2026-11-28T12:00:00Z"
    )
    return served


def _score_launch(attempt: int = 1) -> JobLaunch:
    request = ScoreJobRequest.model_validate(
        {"input": "s3://mlops-raw/portfolio/ids.parquet", "as_of": "2026-11-28T12:00:00+00:00", "output": "s3://out/x"}
    )
    return JobLaunch(JOB_ID, attempt, "score", request.args(JOB_ID), {"MLOPS_JOB_ID": JOB_ID})


def _train_launch(profile: str, attempt: int = 1) -> JobLaunch:
    request = TrainJobRequest.model_validate({"profile": profile, "hyperparameters": {"max_iter": 500}})
    return JobLaunch(JOB_ID, attempt, "train", request.args(JOB_ID), {"MLOPS_JOB_ID": JOB_ID})


def _jobs_of(docs: list[Doc]) -> tuple[Doc, Doc]:
    """The Jobs the worker would create for a scoring job and a `large` training job, from the rendered CronJobs."""
    score = kr.job_from_cronjob(
        _served(_get(docs, "CronJob", SCORE_TEMPLATE)), _score_launch(), active_deadline_seconds=21900
    )
    train = kr.job_from_cronjob(_served(_get(docs, "CronJob", TRAIN_TEMPLATE)), _train_launch("large", 2))
    return score, train


# -- off by default ---------------------------------------------------------------------------------------
def test_jobs_are_off_by_default(rendered: dict[str, list[Doc]]) -> None:
    for name, docs in rendered.items():
        components = {d["metadata"].get("labels", {}).get(COMPONENT) for d in docs}
        assert not components & {"job-worker", "jobs-database"}, name
        assert not [d for d in docs if d["metadata"]["name"] == TRAIN_TEMPLATE], name
        assert not [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == WORKER], name
        for doc in docs:
            if doc["kind"] in ("Deployment", "CronJob", "Job"):
                for container in _pod_template(doc)["spec"]["containers"]:
                    assert not {"JOBS_DATABASE_URL", "JOBS_QUEUE", "TRAINING_PROFILES_FILE"} & set(_env(container)), (
                        f"{name}: {doc['metadata']['name']}"
                    )
                assert "mlops.platform/job-reporter" not in _pod_template(doc)["metadata"].get("labels", {})


# -- the release with jobs on is as sound as every ci/ scenario ----------------------------------------------
def test_jobs_render_keeps_every_invariant(docs: list[Doc]) -> None:
    assert [p for check in inv.ALL_CHECKS for p in check(docs)] == []
    assert inv.namespace_problems(docs, NAMESPACE) == []


def test_jobs_render_is_valid_kubernetes_and_lints(docs: list[Doc], jobs_values: Path) -> None:
    assert validate_builtin_kinds({"jobs": docs}) == []
    assert validate_custom_resources({"jobs": docs}) == []
    result = run([tool("helm"), "lint", "--strict", CHART, "--values", DEFAULT, "--values", jobs_values,
                  "--kube-version", KUBE_VERSION])  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_jobs_render_has_no_unexplained_security_findings(docs: list[Doc], tmp_path: Path) -> None:
    """checkov, as tests/charts/test_security_scan.py runs it on the ci/ scenarios: the one finding beyond the
    chart-wide explained ones is the worker's token (it creates Jobs through the API, with the Role below)."""
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump_all(docs))
    result = run([tool("checkov"), "--directory", tmp_path, "--framework", "kubernetes", "--skip-download",
                  "--quiet", "--compact", "--output", "json"])  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    reports = json.loads(result.stdout)
    failed = [c for r in (reports if isinstance(reports, list) else [reports]) for c in r["results"]["failed_checks"]]
    assert failed, "checkov reported nothing at all: is it scanning the file?"
    assert sorted({(c["check_id"], c["resource"]) for c in failed if c["check_id"] not in EXPLAINED}) == [
        ("CKV_K8S_38", f"Deployment.{NAMESPACE}.{WORKER}")
    ]


# -- the worker -------------------------------------------------------------------------------------------
def test_the_worker_runs_the_kubernetes_runner_on_the_charts_cronjobs(docs: list[Doc]) -> None:
    worker = _get(docs, "Deployment", WORKER)
    container = _container(worker)
    assert python_service(container) == "job_worker"
    assert container["image"] == "registry.example.com/mlops-job-worker:0123456789ab"
    env = _env(container)
    values = {name: e.get("value") for name, e in env.items()}
    assert values["JOB_RUNNER"] == "kubernetes"
    assert env["JOB_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert (values["JOB_MAX_ATTEMPTS"], values["JOB_RETRY_DELAY_S"], values["JOB_TIMEOUT_S"]) == ("3", "30", "21600")
    assert values["JOBS_QUEUE"] == "mlops.jobs"
    assert env["RABBITMQ_URL"] == _env(_container(_get(docs, "Deployment", "mlops-bff")))["RABBITMQ_URL"]
    # The templates are CronJobs of this release, suspended, running the modules the runner expects.
    for variable, kind in (("JOB_TEMPLATE_SCORE", "score"), ("JOB_TEMPLATE_TRAIN", "train")):
        cronjob = _get(docs, "CronJob", values[variable])
        assert cronjob["spec"]["suspend"] is True, variable
        spec = _pod_template(cronjob)["spec"]
        assert kr.job_container(spec, kind)["command"] == [
            "python",
            "-m",
            {"score": "batch_scoring", "train": "trainer"}[kind],
        ]
        assert spec["automountServiceAccountToken"] is False
    assert (values["JOB_TEMPLATE_SCORE"], values["JOB_TEMPLATE_TRAIN"]) == (SCORE_TEMPLATE, TRAIN_TEMPLATE)
    # Metrics: the declared port, probed and scraped.
    port = int(values["JOB_WORKER_METRICS_PORT"])
    assert container["ports"] == [{"name": "metrics", "containerPort": port}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    monitor = _get(docs, "ServiceMonitor", WORKER)
    service = _get(docs, "Service", WORKER)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]
    # One worker pod by default: no PodDisruptionBudget over it; two get one letting one go.
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == WORKER]


def test_two_workers_get_a_disruption_budget(render_jobs: Callable[..., list[Doc]]) -> None:
    docs = render_jobs({"jobWorker.replicaCount": 2})
    assert _get(docs, "Deployment", WORKER)["spec"]["replicas"] == 2
    assert _get(docs, "PodDisruptionBudget", WORKER)["spec"]["maxUnavailable"] == 1
    assert inv.availability_problems(docs) == []


def test_the_worker_settings_follow_the_values(render_jobs: Callable[..., list[Doc]]) -> None:
    docs = render_jobs(
        {"jobWorker.maxAttempts": 5, "jobWorker.retryDelaySeconds": 45, "jobWorker.timeoutSeconds": 3600,
         "jobWorker.metricsPort": 9200, "jobs.queue": "jobs.prod", "jobWorker.settings.JOB_STATS_INTERVAL_S": 60}
    )  # fmt: skip
    values = {n: e.get("value") for n, e in _env(_container(_get(docs, "Deployment", WORKER))).items()}
    assert (values["JOB_MAX_ATTEMPTS"], values["JOB_RETRY_DELAY_S"], values["JOB_TIMEOUT_S"]) == ("5", "45", "3600")
    assert (values["JOB_WORKER_METRICS_PORT"], values["JOB_STATS_INTERVAL_S"]) == ("9200", "60")
    # The API publishes where the worker consumes.
    assert (
        values["JOBS_QUEUE"]
        == _env(_container(_get(docs, "Deployment", "mlops-bff")))["JOBS_QUEUE"]["value"]
        == "jobs.prod"
    )
    # The training template's deadline lies past the worker's timeout, as the runner sets it.
    train = _pod_template(_get(docs, "CronJob", TRAIN_TEMPLATE))
    assert (
        _get(docs, "CronJob", TRAIN_TEMPLATE)["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
        == 3600 + kr.DEADLINE_MARGIN_S
    )
    assert train["spec"]["restartPolicy"] == "Never"
    assert inv.env_problems(docs) == []


# -- RBAC -------------------------------------------------------------------------------------------------
def _granted(role: Doc) -> dict[tuple[str, str], set[str]]:
    rights: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rights.setdefault((group, resource), set()).update(rule["verbs"])
    return rights


def _runner_calls() -> set[str]:
    tree = ast.parse(inspect.getsource(kr))
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and "_namespaced_" in n.attr}


def test_the_role_grants_exactly_what_the_runner_calls(docs: list[Doc]) -> None:
    role = _get(docs, "Role", WORKER)
    assert role["rules"] == [
        {
            "apiGroups": ["batch"],
            "resources": ["cronjobs"],
            "resourceNames": [SCORE_TEMPLATE, TRAIN_TEMPLATE],
            "verbs": ["get"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "get", "list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    # The same rights as the runner's calls need: no more (no watch, update, logs, secrets), no fewer.
    assert _runner_calls() == set(kr.CLIENT_CALLS)
    assert _granted(role) == kr.API_RIGHTS


def test_the_role_is_bound_to_the_workers_own_service_account_only(docs: list[Doc]) -> None:
    binding = _get(docs, "RoleBinding", WORKER)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WORKER}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": WORKER, "namespace": NAMESPACE}]
    account = _get(docs, "ServiceAccount", WORKER)
    assert account["automountServiceAccountToken"] is False
    pod = _pod_template(_get(docs, "Deployment", WORKER))["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (WORKER, True)
    # No other pod runs as the worker, and the jobs' pods get no token.
    users = [
        d["metadata"]["name"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")
        and _pod_template(d)["spec"].get("serviceAccountName") == WORKER
    ]
    assert users == [WORKER]
    for job in _jobs_of(docs):
        assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == "mlops"
    assert inv.rbac_problems(docs) == []


def test_names_agree_and_fit_for_a_long_release_name(chart_dependencies: Path, jobs_values: Path) -> None:
    release = "a-rather-long-release-name-for-the-credit-platform-x"
    docs = helm_template(value_files=[DEFAULT, jobs_values], release=release)
    [worker] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["labels"][COMPONENT] == "job-worker"]
    values = {n: e.get("value") for n, e in _env(_container(worker)).items()}
    [role] = [d for d in docs if d["kind"] == "Role" and d["metadata"]["labels"][COMPONENT] == "job-worker"]
    templates = [values["JOB_TEMPLATE_SCORE"], values["JOB_TEMPLATE_TRAIN"]]
    assert role["rules"][0]["resourceNames"] == templates
    for name in templates:
        cronjob = next(d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == name)
        assert len(name) <= 52, name  # the CronJob controller appends 11 characters to name its Jobs
        served = _served(cronjob)
        kind = "score" if name == values["JOB_TEMPLATE_SCORE"] else "train"
        launch = _score_launch(attempt=10) if kind == "score" else _train_launch("default", attempt=10)
        job = kr.job_from_cronjob(served, launch)
        assert len(job["metadata"]["name"]) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    assert inv.all_problems(docs, NAMESPACE) == []


# -- the Jobs the worker makes from the rendered CronJobs -------------------------------------------------
def test_the_jobs_made_from_the_rendered_cronjobs_are_valid_kubernetes(docs: list[Doc]) -> None:
    score, train = _jobs_of(docs)
    assert validate_builtin_kinds({"score job": [score], "train job": [train]}) == []
    # The same validation rejects a broken one (a misspelt field, a wrong type).
    misspelt = copy.deepcopy(score)
    misspelt["spec"]["ttlSecondsAfterFinish"] = misspelt["spec"].pop("ttlSecondsAfterFinished")
    wrong_type = copy.deepcopy(train)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["args"] = "--profile large"
    problems = validate_builtin_kinds({"misspelt": [misspelt], "wrong type": [wrong_type]})
    assert [p.split(":")[0] for p in problems] == ["misspelt", "wrong type"], problems


def test_the_jobs_join_the_release_unbroken(docs: list[Doc]) -> None:
    """The Jobs add no problem to the release's invariants (env as their Settings read it, images, selectors,
    RBAC); the sync waves left aside: Argo CD never applies these Jobs."""
    checks = [check for check in inv.ALL_CHECKS if check is not inv.sync_wave_problems]
    before = {p for check in checks for p in check(docs)}
    with_jobs = [*docs, *_jobs_of(docs)]
    assert [p for check in checks for p in check(with_jobs) if p not in before] == []
    assert inv.namespace_problems(with_jobs, NAMESPACE) == []


def test_a_scoring_job_runs_the_request_and_reports_into_its_row(docs: list[Doc]) -> None:
    score, _ = _jobs_of(docs)
    template = _get(docs, "CronJob", SCORE_TEMPLATE)
    container = _container(score)
    assert container["args"] == _score_launch().args
    env = _env(container)
    assert env["MLOPS_JOB_ID"] == {"name": "MLOPS_JOB_ID", "value": JOB_ID}
    assert env["JOBS_DATABASE_URL"] == _env(_container(template))["JOBS_DATABASE_URL"]
    assert "K8S_JOB_NAME" not in env  # it fed the template's --job-id only
    assert score["spec"]["backoffLimit"] == 0
    assert score["spec"]["activeDeadlineSeconds"] == 21900
    # Exit codes 2 and 4 still fail the Job at once, naming the job's container.
    rule = score["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["onExitCodes"]["containerName"] == container["name"]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_training_job_gets_the_pod_the_chart_gives_its_profile(
    docs: list[Doc], render_jobs: Callable[..., list[Doc]], profile: str
) -> None:
    """The worker's Job for a profile has the resources and nodeSelector of the chart's own trainer pods for
    that profile (trainer.profile=<profile>), whatever profile the template was rendered for."""
    job = kr.job_from_cronjob(_served(_get(docs, "CronJob", TRAIN_TEMPLATE)), _train_launch(profile))
    chart = _get(render_jobs({"trainer.profile": profile}), "CronJob", TRAIN_TEMPLATE)
    assert _container(job)["resources"] == _container(chart)["resources"]
    assert job["spec"]["template"]["spec"].get("nodeSelector") == _pod_template(chart)["spec"].get("nodeSelector")
    assert ["--profile", profile] == _container(job)["args"][:2]


def test_trainer_value_overrides_reach_every_profile(render_jobs: Callable[..., list[Doc]]) -> None:
    docs = render_jobs({"trainer.resources.limits.memory": "20Gi", "trainer.nodeSelector.zone": "a"})
    job = kr.job_from_cronjob(_served(_get(docs, "CronJob", TRAIN_TEMPLATE)), _train_launch("large"))
    assert _container(job)["resources"]["limits"]["memory"] == "20Gi"
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"mlops.platform/node-pool": "training", "zone": "a"}


# -- the jobs database ------------------------------------------------------------------------------------
def _database_url(docs: list[Doc], container: Doc) -> str:
    ref = _env(container)["JOBS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    return _get(docs, "Secret", ref["name"])["stringData"][ref["key"]]


def test_every_jobs_component_reads_one_database_url(docs: list[Doc]) -> None:
    refs = {
        name: _env(_container(_get(docs, kind, name)))["JOBS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        for kind, name in (
            ("Deployment", "mlops-bff"),
            ("Deployment", WORKER),
            ("CronJob", SCORE_TEMPLATE),
            ("CronJob", TRAIN_TEMPLATE),
        )
    }
    assert len({json.dumps(r, sort_keys=True) for r in refs.values()}) == 1, refs
    url = urlsplit(_database_url(docs, _container(_get(docs, "Deployment", WORKER))))
    statefulset = _get(docs, "StatefulSet", "mlops-postgresql")
    postgres = _env(_container(statefulset))
    service = _get(docs, "Service", "mlops-postgresql")
    assert (url.scheme, url.hostname, url.port) == (
        "postgresql",
        "mlops-postgresql",
        service["spec"]["ports"][0]["port"],
    )
    assert url.username == postgres["POSTGRES_USER"]["value"]
    assert url.password == "ci-only-postgresql-password"
    assert url.path == "/mlops_jobs"


def test_the_url_escapes_user_and_password(render_jobs: Callable[..., list[Doc]]) -> None:
    password = "p@ss:w/rd+#?x y%"
    docs = render_jobs({"postgresql.auth.password": password, "postgresql.auth.username": "ml flow@x"})
    url = urlsplit(_database_url(docs, _container(_get(docs, "Deployment", WORKER))))
    assert (url.hostname, url.port, url.path) == ("mlops-postgresql", 5432, "/mlops_jobs")
    assert (unquote(url.username or ""), unquote(url.password or "")) == ("ml flow@x", password)


def test_the_database_job_creates_the_jobs_database_as_mlflows_owner(docs: list[Doc]) -> None:
    [job] = [d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"][COMPONENT] == "jobs-database"]
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "HookFailed"
    # The infrastructure's wave, before the jobs API and the worker (serving).
    assert (
        inv.wave(job)
        == 0
        < inv.wave(_get(docs, "Deployment", WORKER))
        == inv.wave(_get(docs, "Deployment", "mlops-bff"))
    )
    container = _container(job)
    statefulset = _get(docs, "StatefulSet", "mlops-postgresql")
    postgres = _env(_container(statefulset))
    env = _env(container)
    assert container["image"] == _container(statefulset)["image"]
    assert env["PGUSER"]["value"] == postgres["POSTGRES_USER"]["value"]
    assert env["PGDATABASE"]["value"] == postgres["POSTGRES_DB"]["value"]
    assert env["PGPASSWORD"]["valueFrom"] == postgres["POSTGRES_PASSWORD"]["valueFrom"]
    assert (env["PGHOST"]["value"], env["PGPORT"]["value"]) == ("mlops-postgresql", "5432")
    assert (
        env["JOBS_DATABASE"]["value"]
        == urlsplit(_database_url(docs, _container(_get(docs, "Deployment", WORKER)))).path[1:]
    )
    # The name reaches SQL as a psql variable only, never spliced into the script.
    assert "mlops_jobs" not in " ".join(container["command"])
    assert _pod_template(job)["spec"]["automountServiceAccountToken"] is False


def test_another_database_name_runs_the_job_again(docs: list[Doc], render_jobs: Callable[..., list[Doc]]) -> None:
    def name(docs: list[Doc]) -> str:
        return next(
            d["metadata"]["name"]
            for d in docs
            if d["kind"] == "Job" and d["metadata"]["labels"][COMPONENT] == "jobs-database"
        )

    assert (
        name(render_jobs({"jobs.database.name": "jobs_v2"})) != name(docs) == name(render_jobs({"bff.replicaCount": 3}))
    )


@pytest.mark.integration
def test_the_database_script_creates_the_database_once(docs: list[Doc], postgres_admin_dsn: str) -> None:
    """The Job's own script against the machine's PostgreSQL: creates the database, then finds it (idempotent)."""
    from devstack import system_services as sys_svc

    [job] = [d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"][COMPONENT] == "jobs-database"]
    command = _container(job)["command"]
    admin = urlsplit(postgres_admin_dsn)
    database = f"pytest_{os.getpid()}_{secrets.token_hex(3)}_jobs"
    env = {
        **os.environ,
        "PGHOST": admin.hostname or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "PGUSER": unquote(admin.username or "postgres"),
        "PGDATABASE": admin.path[1:] or "postgres",
        "JOBS_DATABASE": database,
    }
    if admin.password:
        env["PGPASSWORD"] = unquote(admin.password)
    try:
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
        assert "CREATE DATABASE" in first.stdout
        assert "CREATE DATABASE" not in second.stdout
        assert sys_svc.list_databases(postgres_admin_dsn, database) == [database]
    finally:
        sys_svc.drop_database(postgres_admin_dsn, database)


def test_existing_postgresql_credentials_need_a_jobs_url_secret(render_jobs: Callable[..., list[Doc]]) -> None:
    secret = {"postgresql.auth.existingSecret": "mlops-postgresql-credentials"}
    with pytest.raises(HelmError, match=r"jobs\.database\.existingSecret is required"):
        render_jobs(secret)
    docs = render_jobs({**secret, "jobs.database.existingSecret": "mlops-jobs-database-url"})
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "mlops-jobs-database"]
    ref = _env(_container(_get(docs, "Deployment", WORKER)))["JOBS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "mlops-jobs-database-url", "key": "url"}
    [job] = [d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"][COMPONENT] == "jobs-database"]
    assert _env(_container(job))["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlops-postgresql-credentials"


def test_a_managed_database_is_reached_on_its_port(chart_dependencies: Path, jobs_values: Path) -> None:
    managed = next(p for p in CI_VALUES if p.name.startswith("03-"))
    with pytest.raises(HelmError, match=r"jobs\.database\.existingSecret is required with postgresql\.enabled false"):
        helm_template(value_files=[managed, jobs_values])
    docs = helm_template(
        value_files=[managed, jobs_values],
        set_values={"jobs.database.existingSecret": "mlops-jobs-database-url", "jobs.database.port": 6432},
    )
    assert not [d for d in docs if d["metadata"]["labels"].get(COMPONENT) == "jobs-database"]
    worker = _pod(docs, _get(docs, "Deployment", WORKER))
    assert allowed(docs, worker, External("10.20.30.40"), 6432)
    assert not allowed(docs, worker, External("10.20.30.40"), 5432)
    assert inv.all_problems(docs, NAMESPACE) == []


# -- the BFF's jobs API -----------------------------------------------------------------------------------
def test_the_bff_gets_the_profiles_file_and_the_database(docs: list[Doc]) -> None:
    bff = _get(docs, "Deployment", "mlops-bff")
    container = _container(bff)
    env = _env(container)
    path = Path(env["TRAINING_PROFILES_FILE"]["value"])
    [mount] = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    assert mount.get("readOnly") is True
    [volume] = [v for v in _pod_template(bff)["spec"]["volumes"] if v["name"] == mount["name"]]
    configmap = _get(docs, "ConfigMap", volume["configMap"]["name"])
    assert configmap["data"][path.name] == (REPO / "services" / "trainer" / "profiles.yaml").read_text()
    annotations = _pod_template(bff)["metadata"]["annotations"]
    assert annotations["checksum/training-profiles"]
    assert env["JOBS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "mlops-jobs-database"
    assert _database_url(docs, container).startswith("postgresql://mlflow:")
    # The jobs API is behind API keys.
    assert env["API_KEYS_REQUIRED"]["value"] == "true"


# -- refused values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"bff.apiKeys.required": False}, "jobs.enabled needs bff.apiKeys.required"),
        ({"batchScoring.enabled": False}, "jobs.enabled needs batchScoring.enabled"),
        ({"jobWorker.settings.JOB_RUNNER": "local"}, "jobWorker.settings.JOB_RUNNER"),
        ({"jobWorker.settings.JOB_TEMPLATE_TRAIN": "x"}, "jobWorker.settings.JOB_TEMPLATE_TRAIN"),
        ({"bff.settings.JOBS_DATABASE_URL": "postgresql://u:p@h/db"}, "set jobs.database.existingSecret instead"),
        (
            {"batchScoring.settings.JOBS_DATABASE_URL": "postgresql://u:p@h/db"},
            "batchScoring.settings.JOBS_DATABASE_URL",
        ),
        ({"bff.settings.TRAINING_PROFILES_FILE": "/x.yaml"}, "bff.settings.TRAINING_PROFILES_FILE"),
        ({"jobs.database.name": "jobs; DROP"}, "/jobs/database/name"),
        ({"jobWorker.maxAttempts": 0}, "/jobWorker/maxAttempts"),
        ({"jobWorker.replicas": 2}, "'replicas' not allowed"),
    ],
)
def test_bad_jobs_values_are_named(render_jobs: Callable[..., list[Doc]], values: dict, expected: str) -> None:
    with pytest.raises(HelmError) as failure:
        render_jobs(values)
    assert expected in str(failure.value), str(failure.value)


# -- NetworkPolicies --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pod:
    labels: dict[str, str]
    namespace_labels: dict[str, str] = field(default_factory=lambda: {"kubernetes.io/metadata.name": NAMESPACE})


@dataclass(frozen=True)
class External:
    ip: str


PROMETHEUS = Pod({"app.kubernetes.io/name": "prometheus"}, {"kubernetes.io/metadata.name": "monitoring"})


def _pod(docs: list[Doc], owner: Doc) -> Pod:
    return Pod(_pod_template(owner)["metadata"]["labels"])


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_admits(peer: Doc, other: Pod | External) -> bool:
    if isinstance(other, External):
        block = peer.get("ipBlock")
        return bool(block) and ipaddress.ip_address(other.ip) in ipaddress.ip_network(block["cidr"])
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        namespace_ok = _matches(peer["namespaceSelector"], other.namespace_labels)
    else:
        namespace_ok = other.namespace_labels.get("kubernetes.io/metadata.name") == NAMESPACE
    return namespace_ok and ("podSelector" not in peer or _matches(peer["podSelector"], other.labels))


def _rule_admits(rule: Doc, peers_key: str, other: Pod | External, port: int) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port for p in ports):
        return False
    return peers_key not in rule or any(_peer_admits(peer, other) for peer in rule[peers_key])


def allowed(docs: list[Doc], source: Pod | External, target: Pod | External, port: int) -> bool:
    """Whether the release's NetworkPolicies let `source` open a TCP connection to `target` on `port`
    (matchLabels selectors, namespace and ipBlock peers: what the chart uses)."""
    policies = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"]

    def in_release(pod: Pod | External) -> bool:
        return isinstance(pod, Pod) and pod.namespace_labels.get("kubernetes.io/metadata.name") == NAMESPACE

    if in_release(source):
        egress = [p for p in policies if "Egress" in p["policyTypes"] and _matches(p["podSelector"], source.labels)]
        if egress and not any(_rule_admits(r, "to", target, port) for p in egress for r in p.get("egress", [])):
            return False
    if in_release(target):
        ingress = [p for p in policies if "Ingress" in p["policyTypes"] and _matches(p["podSelector"], target.labels)]
        if ingress and not any(_rule_admits(r, "from", source, port) for p in ingress for r in p.get("ingress", [])):
            return False
    return True


def test_the_policy_model_has_teeth(rendered: dict[str, list[Doc]], docs: list[Doc]) -> None:
    """Without jobs the BFF may not reach PostgreSQL; nobody reaches what no rule opens."""
    default = rendered["01-default"]
    bff, postgres = (
        _pod(default, _get(default, k, n))
        for k, n in (("Deployment", "mlops-bff"), ("StatefulSet", "mlops-postgresql"))
    )
    assert not allowed(default, bff, postgres, 5432)
    assert allowed(docs, bff, postgres, 5432)
    log_worker = _pod(docs, _get(docs, "Deployment", "mlops-log-worker"))
    assert not allowed(docs, log_worker, postgres, 5432)
    assert allowed(docs, _pod(docs, _get(docs, "Deployment", "mlops-mlflow")), postgres, 5432)


def test_the_worker_reaches_rabbitmq_postgresql_and_the_api_server_only(docs: list[Doc]) -> None:
    worker = _pod(docs, _get(docs, "Deployment", WORKER))
    servers = {
        name: _pod(docs, _get(docs, "StatefulSet", f"mlops-{name}"))
        for name in ("rabbitmq", "postgresql", "redis", "minio")
    }
    assert allowed(docs, worker, servers["rabbitmq"], 5672)
    assert allowed(docs, worker, servers["postgresql"], 5432)
    assert not allowed(docs, worker, servers["postgresql"], 5433)
    assert not allowed(docs, worker, servers["redis"], 6379)
    assert not allowed(docs, worker, servers["minio"], 9000)
    triton = _pod(docs, _get(docs, "Deployment", "mlops-triton"))
    assert not allowed(docs, worker, triton, 8000)
    # The API server (any address on its ports unless networkPolicy.kubernetesApiTo names it), nothing else outside.
    assert allowed(docs, worker, External("10.0.0.10"), 6443)
    assert allowed(docs, worker, External("10.0.0.10"), 443)
    assert not allowed(docs, worker, External("10.0.0.10"), 80)


def test_the_api_server_rule_follows_kubernetes_api_to(render_jobs: Callable[..., list[Doc]]) -> None:
    docs = render_jobs(
        {"networkPolicy.kubernetesApiTo[0].ipBlock.cidr": "10.0.0.10/32", "networkPolicy.kubernetesApiPorts[0]": 6443}
    )
    worker = _pod(docs, _get(docs, "Deployment", WORKER))
    assert allowed(docs, worker, External("10.0.0.10"), 6443)
    assert not allowed(docs, worker, External("10.0.0.11"), 6443)


def test_only_prometheus_reaches_the_worker_on_its_metrics_port(docs: list[Doc]) -> None:
    worker = _pod(docs, _get(docs, "Deployment", WORKER))
    bff = _pod(docs, _get(docs, "Deployment", "mlops-bff"))
    assert allowed(docs, PROMETHEUS, worker, 9105)
    assert not allowed(docs, PROMETHEUS, worker, 8080)
    assert not allowed(docs, bff, worker, 9105)
    assert inv.scrape_problems(docs) == []


def test_the_jobs_pods_report_into_the_database_and_keep_their_components_flow(docs: list[Doc]) -> None:
    postgres = _pod(docs, _get(docs, "StatefulSet", "mlops-postgresql"))
    score, train = (Pod(job["spec"]["template"]["metadata"]["labels"]) for job in _jobs_of(docs))
    triton = _pod(docs, _get(docs, "Deployment", "mlops-triton"))
    mlflow = _pod(docs, _get(docs, "Deployment", "mlops-mlflow"))
    minio = _pod(docs, _get(docs, "StatefulSet", "mlops-minio"))
    assert allowed(docs, score, postgres, 5432)
    assert allowed(docs, train, postgres, 5432)
    assert allowed(docs, score, triton, 8000)
    assert allowed(docs, score, minio, 9000)
    assert allowed(docs, train, mlflow, 5000)
    assert allowed(docs, train, minio, 9000)
    assert not allowed(docs, train, triton, 8000)
    # The install-time trainer Job and the retrain CronJob's pods report nothing: no way to the database.
    [install] = [d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"][COMPONENT] == "trainer"]
    assert not allowed(docs, _pod(docs, install), postgres, 5432)
    # The database Job reaches PostgreSQL and nothing else.
    [database_job] = [d for d in docs if d["kind"] == "Job" and d["metadata"]["labels"][COMPONENT] == "jobs-database"]
    creator = _pod(docs, database_job)
    assert allowed(docs, creator, postgres, 5432)
    assert not allowed(docs, creator, minio, 9000)
    assert not allowed(docs, creator, External("10.0.0.10"), 443)


# -- what people read ---------------------------------------------------------------------------------------
def test_notes_show_how_to_follow_the_jobs(chart_dependencies: Path, jobs_values: Path) -> None:
    result = run([tool("helm"), "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client",
                  "--values", DEFAULT, "--values", jobs_values])  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.partition("\nNOTES:\n")[2]
    assert f"-l {kr.TRIGGERED_BY_LABEL}=job-worker -L {kr.JOB_ID_LABEL},{kr.ATTEMPT_LABEL}" in notes
    assert SCORE_TEMPLATE in notes
    assert TRAIN_TEMPLATE in notes
