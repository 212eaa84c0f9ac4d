"""The real components, started the way the fixtures and `devstack up` start them (never on the
fixed ports of the local stack)."""

import dataclasses
import socket
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aio_pika
import httpx
import numpy as np
import psycopg2
import pytest
import redis
import sqlalchemy
from botocore.exceptions import ClientError
from pydantic import SecretStr

from devstack import system_services as sys_svc
from devstack.components import MlflowServer, S3Server, SeaweedPorts, TritonServer, start_seaweedfs
from devstack.processes import DaemonStartError, http_ok, wait_until_healthy
from devstack.settings import Settings
from devstack.stack import LocalStack
from mlops_common.s3 import s3_client

pytestmark = pytest.mark.integration


# -- system services ------------------------------------------------------------------------------
def test_postgres_databases_are_fresh_and_private(postgres_dsn_factory: Callable[..., str]) -> None:
    dsn = postgres_dsn_factory()
    other = postgres_dsn_factory(driver="postgresql+psycopg2")
    assert dsn.rsplit("/", 1)[1] != other.rsplit("/", 1)[1]
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), count(*) FROM pg_tables WHERE schemaname = 'public'")
        name, tables = cur.fetchone()
    assert name.startswith("pytest_")
    assert tables == 0
    engine = sqlalchemy.create_engine(other)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    assert sys_svc.redis_ready(*Settings().redis_host_port)


async def test_rabbitmq_session_vhost(rabbitmq_url: str, unique_name: Callable[..., str]) -> None:
    assert rabbitmq_url.rsplit("/", 1)[1].startswith("pytest_")
    connection = await aio_pika.connect_robust(rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(unique_name("q"), auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"hello"), routing_key=queue.name)
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.body == b"hello"


# -- SeaweedFS ------------------------------------------------------------------------------------
def test_s3_server_stores_objects_and_enforces_credentials(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket("it")
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"payload")
    assert client.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"payload"
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]

    intruder = s3_client(s3_server.settings().model_copy(update={"aws_secret_access_key": SecretStr("wrong")}))
    with pytest.raises(ClientError):
        intruder.list_objects_v2(Bucket=bucket)


def test_seaweedfs_failing_start_reports_its_log(tmp_path: Path) -> None:
    # A port already taken: weed refuses to start, and the error must say why.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        ports = dataclasses.replace(SeaweedPorts.free(), s3=taken)
        with pytest.raises(DaemonStartError) as err:
            start_seaweedfs(tmp_path / "data", ports, "k", "s", tmp_path / "weed.log", die_with_parent=True)
    message = str(err.value)
    assert "seaweedfs exited before it became healthy" in message
    assert str(taken) in message
    assert "not available" in message


# -- MLflow ---------------------------------------------------------------------------------------
def test_mlflow_tracks_runs_and_proxies_artifacts_to_s3(
    mlflow_server: MlflowServer, s3_server: S3Server, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    from mlflow.tracking import MlflowClient

    assert http_ok(f"{mlflow_server.tracking_uri}/health")
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    experiment_id = client.create_experiment(unique_name("exp"))
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "auc", 0.75)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)

    assert client.get_run(run.info.run_id).data.metrics == {"auc": 0.75}
    # Clients need no S3 credentials: the server wrote the artifact into its own bucket.
    bucket, prefix = mlflow_server.artifacts_destination.removeprefix("s3://").split("/", 1)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert any(key.endswith(f"{run.info.run_id}/artifacts/note.txt") for key in keys)


# -- Triton ---------------------------------------------------------------------------------------
ADD_ONE_MODEL = """
import numpy as np
import onnxruntime  # noqa: F401  (proves the stub runs the Triton venv's interpreter and packages)
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x + 1).astype(np.float32))]))
        return responses
"""


def test_triton_serves_a_python_backend_model(triton_server: TritonServer, unique_name: Callable[..., str]) -> None:
    import tritonclient.grpc as grpcclient

    assert http_ok(f"{triton_server.base_url}/v2/health/live")
    with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as response:
        assert b"nv_cpu_utilization" in response.read()

    name = unique_name("add_one", sep="_")
    model_dir = triton_server.model_repository / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(ADD_ONE_MODEL)
    (model_dir / "config.pbtxt").write_text(
        textwrap.dedent(f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 8
        input [{{ name: "X", data_type: TYPE_FP32, dims: [2] }}]
        output [{{ name: "Y", data_type: TYPE_FP32, dims: [2] }}]
        instance_group [{{ kind: KIND_CPU, count: 1 }}]
        """)
    )
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        client.load_model(name)  # explicit mode: nothing loads until asked
        assert client.is_model_ready(name)
        data = np.array([[1.0, 2.0]], dtype=np.float32)
        inputs = [grpcclient.InferInput("X", list(data.shape), "FP32")]
        inputs[0].set_data_from_numpy(data)
        result = client.infer(name, inputs)
        np.testing.assert_array_equal(result.as_numpy("Y"), data + 1)
    finally:
        client.unload_model(name)
        client.close()


# -- the local stack on private ports -------------------------------------------------------------
@pytest.fixture
def private_stack(private_stack_settings: Settings) -> LocalStack:
    """The `devstack up` code path with every port free and all state under tmp_path."""
    stack = LocalStack(private_stack_settings)
    yield stack
    stack.reset()  # also the stack's vhost, database and Feast keys in the machine's services


def test_up_is_idempotent_and_down_stops_what_it_started(private_stack: LocalStack) -> None:
    # MLflow's own start is covered by the mlflow_server fixture; starting a second one costs ~20 s.
    components = ["redis", "rabbitmq", "seaweedfs", "triton", "prometheus"]
    private_stack.up(components)
    first = {c.name: c for c in private_stack.status()}
    assert all(first[name].up for name in components), first
    pids = {name: first[name].pid for name in ("seaweedfs", "triton", "prometheus")}
    assert all(pids.values())

    private_stack.up(components)
    second = {c.name: c for c in private_stack.status()}
    assert {name: second[name].pid for name in pids} == pids

    settings = private_stack.settings
    client = s3_client(settings)
    assert set(settings.buckets) <= {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert (settings.logs_dir / "triton.log").exists()
    assert (settings.run_dir / "seaweedfs.pid").read_text().strip() == str(pids["seaweedfs"])

    # Prometheus scrapes the stack's Triton with the Operator's labels and loaded the rule files.
    prometheus = settings.prometheus_url
    wait_until_healthy(lambda: _query(prometheus, 'up{job="mlops-triton", endpoint="metrics"} == 1'), 30)
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {group["name"] for group in rules} >= {"mlops-serving", "mlops-log-pipeline"}

    assert sorted(private_stack.down()) == ["prometheus", "seaweedfs", "triton"]
    after = {c.name: c for c in private_stack.status()}
    assert not after["seaweedfs"].up
    assert not after["triton"].up
    assert not list(settings.run_dir.glob("*.pid"))


def test_up_postgres_creates_mlflow_role_and_database(unique_name: Callable[..., str], tmp_path: Path) -> None:
    stack = LocalStack(Settings(mlflow_db_name=unique_name("pytest_mlflow", sep="_"), stack_dir=tmp_path))
    settings = stack.settings
    admin_dsn = sys_svc.postgres_dsn("postgres", host=settings.postgres_host, port=settings.postgres_port)
    try:
        stack._up_postgres()
        stack._up_postgres()  # idempotent
        assert sys_svc.database_exists(admin_dsn, settings.mlflow_db_name)
        dsn = settings.mlflow_backend_store_uri.replace("+psycopg2", "")
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == settings.mlflow_db_user
    finally:
        sys_svc.drop_database(admin_dsn, settings.mlflow_db_name)


def _query(prometheus_url: str, expr: str) -> list:
    return httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]


# -- the environment for the platform's processes ---------------------------------------------------
def test_platform_env_configures_the_services(
    platform_env: dict[str, str],
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    settings_field_names: set[str],
) -> None:
    from bff.settings import Settings as BffSettings
    from log_worker.settings import Settings as LogWorkerSettings
    from model_sync.settings import Settings as ModelSyncSettings

    unknown = [name for name in platform_env if name.lower() not in settings_field_names]
    assert not unknown, f"platform_env sets variables no settings class reads: {unknown}"
    for key, value in platform_env.items():
        monkeypatch.setenv(key, value)
    bff = BffSettings()
    assert bff.triton_http_url == platform_env["TRITON_HTTP_URL"]
    assert ModelSyncSettings().triton_grpc_url == platform_env["TRITON_GRPC_URL"]
    assert bff.feast_project == platform_env["FEAST_PROJECT"]
    assert bff.rabbitmq_url.get_secret_value() == platform_env["RABBITMQ_URL"]
    assert bff.bff_port == int(platform_env["BFF_PORT"])
    assert LogWorkerSettings().logs_bucket == platform_env["LOGS_BUCKET"]
    assert str(ModelSyncSettings().model_repository) == platform_env["MODEL_REPOSITORY"]

    buckets = {b["Name"] for b in s3_server.client().list_buckets()["Buckets"]}
    assert {platform_env["RAW_BUCKET"], platform_env["OFFLINE_BUCKET"], platform_env["LOGS_BUCKET"]} <= buckets


def test_platform_env_is_fresh_per_call(platform_env_factory: Callable[[], dict[str, str]]) -> None:
    one, two = platform_env_factory(), platform_env_factory()
    for key in ("RAW_BUCKET", "OFFLINE_BUCKET", "FEAST_PROJECT", "FEAST_REGISTRY_PATH", "INFERENCE_LOG_QUEUE"):
        assert one[key] != two[key]
    assert one["MLFLOW_TRACKING_URI"] == two["MLFLOW_TRACKING_URI"]
