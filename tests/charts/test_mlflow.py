"""Prod-grade MLflow (issue #16): the server runs as a ServiceAccount that carries the platform's cloud role,
no credential goes into its database URI, and `mlflow db upgrade` runs before the servers start."""

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from chart_tools import REPO, Doc, helm_template, pod_templates

PROD = REPO / "argocd" / "environments" / "prod" / "values.yaml"
ROLE = "eks.amazonaws.com/role-arn"


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _migration(docs: list[Doc]) -> Doc:
    [job] = [
        d
        for d in docs
        if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "model-registry-migration"
    ]
    return job


def _uri(docs: list[Doc]) -> str:
    [container] = _get(docs, "Deployment", "mlops-mlflow")["spec"]["template"]["spec"]["containers"]
    [arg] = [a for a in container["args"] if a.startswith("--backend-store-uri=")]
    return arg.removeprefix("--backend-store-uri=")


@pytest.fixture(scope="module")
def prod(chart_dependencies: Path) -> list[Doc]:
    return helm_template(value_files=[PROD], set_values={"global.platformImageTag": "0123abc"})


def test_prod_mlflow_runs_as_a_service_account_with_the_platform_role(prod: list[Doc]) -> None:
    pod = _get(prod, "Deployment", "mlops-mlflow")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mlops-mlflow"
    account = _get(prod, "ServiceAccount", "mlops-mlflow")
    platform = _get(prod, "ServiceAccount", "mlops")
    assert account["metadata"]["annotations"][ROLE] == platform["metadata"]["annotations"][ROLE]
    # Prod has no artifact Secret: S3 comes from that role alone.
    env = {e["name"] for c in pod["containers"] for e in c.get("env", [])}
    assert not env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert _migration(prod)["spec"]["template"]["spec"]["serviceAccountName"] == "mlops-mlflow"


@pytest.mark.parametrize("scenario", ["01-default", "03-managed-services", "06-ingress-existing-secrets", "10-keda"])
def test_every_pod_that_reaches_s3_or_mlflow_runs_as_a_service_account_of_the_release(
    rendered: dict[str, list[Doc]], scenario: str
) -> None:
    """The platform's and MLflow's pods name a ServiceAccount the release makes (the one a cloud role can
    trust); the other infrastructure pods keep the namespace's default account, without a token."""
    docs = rendered[scenario]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    for owner, template in pod_templates(docs):
        name = owner["metadata"]["name"]
        if owner["metadata"]["labels"]["app.kubernetes.io/name"] in ("mlops", "mlflow"):
            assert template["spec"].get("serviceAccountName") in accounts, name
        else:
            assert template["spec"]["automountServiceAccountToken"] is False, name


def test_no_credential_in_the_database_uri(render: Callable[..., list[Doc]]) -> None:
    """The password reaches the driver as PGPASSWORD (libpq), the user and database are URL-escaped: no
    character of theirs can end the user part or point the URI elsewhere."""
    user, database = "ml flow@evil.example:1/x", "mlflow?sslmode=disable"
    docs = render({"mlflow.backendStore.username": user, "mlflow.backendStore.database": database})
    uri = urlsplit(_uri(docs))
    assert (uri.hostname, uri.port, uri.password) == ("mlops-postgresql", 5432, None)
    assert unquote(uri.username) == user
    assert unquote(uri.path.removeprefix("/")) == database
    assert uri.query == ""
    [container] = _get(docs, "Deployment", "mlops-mlflow")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlops-postgresql", "key": "password"}
    assert "$(" not in _uri(docs)


def test_schema_migration_runs_before_the_servers(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["01-default"]
    job, server = _migration(docs), _get(docs, "Deployment", "mlops-mlflow")
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    [serve] = server["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["mlflow", "db", "upgrade", _uri(docs)]
    assert migrate["image"] == serve["image"]
    assert {e["name"]: e for e in migrate["env"]}["PGPASSWORD"] == {e["name"]: e for e in serve["env"]}["PGPASSWORD"]
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "HookFailed"
    wave = "argocd.argoproj.io/sync-wave"
    assert int(annotations[wave]) < int(server["metadata"]["annotations"][wave])


def test_a_new_mlflow_image_migrates_again(render: Callable[..., list[Doc]]) -> None:
    first = _migration(render({"mlflow.image.tag": "aaaa"}))["metadata"]["name"]
    assert _migration(render({"mlflow.image.tag": "aaaa"}))["metadata"]["name"] == first
    assert _migration(render({"mlflow.image.tag": "bbbb"}))["metadata"]["name"] != first


def test_two_servers_get_a_disruption_budget(prod: list[Doc], render: Callable[..., list[Doc]]) -> None:
    assert _get(prod, "Deployment", "mlops-mlflow")["spec"]["replicas"] == 2
    assert _get(prod, "PodDisruptionBudget", "mlops-mlflow")["spec"]["maxUnavailable"] == 1
    assert "mlops-mlflow" not in {d["metadata"]["name"] for d in render() if d["kind"] == "PodDisruptionBudget"}


def _bucket_job_env(docs: list[Doc]) -> dict[str, Doc]:
    [job] = [
        d
        for d in docs
        if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "bucket-provisioning"
    ]
    [container] = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_minio_client_url_escapes_the_credentials(render: Callable[..., list[Doc]]) -> None:
    """The bucket Job's MC_HOST URL comes from the Secret the chart makes, its credentials URL-escaped."""
    user, password = "ml ops", "p@ss:w/rd+#?x"
    docs = render({"minio.auth.rootUser": user, "minio.auth.rootPassword": password})
    env = _bucket_job_env(docs)
    assert env["MC_HOST_target"]["valueFrom"]["secretKeyRef"] == {"name": "mlops-minio", "key": "mc-host-url"}
    secret = _get(docs, "Secret", "mlops-minio")["stringData"]
    url = urlsplit(secret["mc-host-url"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("http", "mlops-minio", 9000, "")
    assert (unquote(url.username), unquote(url.password)) == (user, password)
    assert (secret["access-key-id"], secret["secret-access-key"]) == (user, password)


def test_an_existing_minio_secret_may_carry_the_url(render: Callable[..., list[Doc]]) -> None:
    with_key = _bucket_job_env(
        render({"minio.auth.existingSecret": "creds", "minio.auth.existingSecretUrlKey": "mc-url"})
    )
    assert with_key["MC_HOST_target"]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "mc-url"}
    # Without one, the kubelet composes it from the two keys (they must be URL-safe: argocd/README.md).
    composed = _bucket_job_env(render({"minio.auth.existingSecret": "creds"}))
    assert composed["MC_HOST_target"]["value"] == "http://$(ACCESS_KEY_ID):$(SECRET_ACCESS_KEY)@mlops-minio:9000"
