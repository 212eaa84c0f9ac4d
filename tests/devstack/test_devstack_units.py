"""Pure logic of devstack: address parsing, settings, ports, health waiting, status lines."""

import socket
import time
from pathlib import Path

import pytest

from devstack.__main__ import main
from devstack.components import SeaweedPorts, app_daemon
from devstack.instance import StackInstance
from devstack.processes import DaemonStartError, free_port, free_port_block, tail, wait_until_healthy
from devstack.settings import Settings, host_port
from devstack.stack import ComponentStatus
from devstack.system_services import (
    MissingDependencyError,
    postgres_ready,
    rabbitmq_ready,
    redis_ready,
    require_binary,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://127.0.0.1:8333", ("127.0.0.1", 8333)),
        ("http://localhost:5000/", ("localhost", 5000)),
        ("127.0.0.1:8001", ("127.0.0.1", 8001)),
        ("amqp://guest:guest@127.0.0.1:5672/", ("127.0.0.1", 5672)),
        ("amqp://guest:guest@rabbit/vhost", ("rabbit", 5672)),
        ("127.0.0.1:6379,db=0", ("127.0.0.1", 6379)),
        ("redis-host,db=1,ssl=true", ("redis-host", 5672)),
    ],
)
def test_host_port(address: str, expected: tuple[str, int]) -> None:
    assert host_port(address, 5672) == expected


def test_settings_follow_platform_addresses() -> None:
    settings = Settings(
        s3_endpoint_url="http://127.0.0.1:9100",
        mlflow_tracking_uri="http://127.0.0.1:5100",
        triton_http_url="127.0.0.1:8100",
        triton_grpc_url="127.0.0.1:8101",
        mlflow_db_password="p@ss word",
        mlflow_db_name="mlflow",
    )
    assert settings.s3_host_port == ("127.0.0.1", 9100)
    assert settings.mlflow_host_port == ("127.0.0.1", 5100)
    assert settings.triton_http_host_port[1] == 8100
    assert settings.triton_grpc_host_port[1] == 8101
    # psycopg2 explicitly (SQLAlchemy 2.1 would pick psycopg 3), password URL-quoted.
    assert settings.mlflow_backend_store_uri == "postgresql+psycopg2://mlflow:p%40ss%20word@127.0.0.1:5432/mlflow"
    assert settings.mlflow_artifacts_destination == "s3://mlops-mlflow/artifacts"
    assert set(settings.buckets) == {
        "mlops-raw",
        "mlops-offline",
        "mlops-mlflow",
        "mlops-inference-logs",
        "mlops-scores",
    }


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_WORKERS", "2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    settings = Settings()
    assert settings.mlflow_workers == 2
    assert settings.secret_key == "from-env"


def test_platform_env_names_are_settings_fields(settings_field_names: set[str], tmp_path: Path) -> None:
    fields = settings_field_names
    settings = Settings(stack_dir=tmp_path)
    env = StackInstance.load_or_create(settings).bind(settings).platform_env()
    unknown = [name for name in env if name.lower() not in fields]
    assert not unknown, f"platform_env sets variables no settings class reads: {unknown}"


def test_free_port_is_bindable_and_never_repeats() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_free_port_block_is_bindable() -> None:
    base = free_port_block(9)
    assert 20000 <= base < 32000
    for port in range(base, base + 9):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    assert free_port_block(9) not in range(base - 8, base + 9)


def test_seaweed_ports_args() -> None:
    assert SeaweedPorts(s3=8333).args() == [
        "-s3.port=8333",
        "-master.port=9333",
        "-volume.port=9340",
        "-filer.port=8888",
        "-admin.port=23646",
    ]
    block = SeaweedPorts.block(8333, 17330)
    assert block.args() == [
        "-s3.port=8333",
        "-s3.port.grpc=17334",
        "-master.port=17330",
        "-master.port.grpc=17335",
        "-volume.port=17331",
        "-volume.port.grpc=17336",
        "-filer.port=17332",
        "-filer.port.grpc=17337",
        "-admin.port=17333",
        "-admin.port.grpc=17338",
    ]
    free = SeaweedPorts.free()
    args = free.args()
    assert len(args) == 10
    assert len({arg.split("=")[1] for arg in args}) == 10
    assert f"-s3.port.grpc={free.s3_grpc}" in args


def test_wait_until_healthy_polls_until_check_passes() -> None:
    calls = iter([False, False, True])
    waited = wait_until_healthy(lambda: next(calls), timeout_s=5, interval_s=0.01)
    assert waited < 1


def test_wait_until_healthy_times_out() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="thing not healthy"):
        wait_until_healthy(lambda: False, timeout_s=0.3, interval_s=0.05, describe="thing")
    assert time.monotonic() - started < 2


def test_wait_until_healthy_fails_fast_when_process_died() -> None:
    with pytest.raises(DaemonStartError, match="exited"):
        wait_until_healthy(lambda: False, timeout_s=30, interval_s=0.01, is_alive=lambda: False)


def test_wait_until_healthy_accepts_a_url() -> None:
    with pytest.raises(TimeoutError):
        wait_until_healthy(f"http://127.0.0.1:{free_port()}/health", timeout_s=0.3, interval_s=0.05)


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert tail(log) == ""
    log.write_text("\n".join(f"line {i}" for i in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"


def test_app_daemon_runs_a_module_with_platform_pythonpath(tmp_path: Path) -> None:
    daemon = app_daemon("bff", "bff", tmp_path / "bff.log", env={"BFF_PORT": "9999"}, health="http://x/healthz")
    assert daemon.argv[1:] == ["-m", "bff"]
    assert daemon.env["BFF_PORT"] == "9999"
    assert daemon.env["PYTHONPATH"].split(":")[0].endswith("/services")
    assert daemon.address == "http://x/healthz"


def test_fingerprint_changes_with_configuration(tmp_path: Path) -> None:
    one = app_daemon("a", ["x", "--port", "1"], tmp_path / "a.log")
    assert one.fingerprint() == app_daemon("a", ["x", "--port", "1"], tmp_path / "a.log").fingerprint()
    assert one.fingerprint() != app_daemon("a", ["x", "--port", "2"], tmp_path / "a.log").fingerprint()
    assert one.fingerprint() != app_daemon("a", ["x", "--port", "1"], tmp_path / "a.log", env={"K": "v"}).fingerprint()


def test_status_line() -> None:
    line = ComponentStatus("mlflow", True, "http://127.0.0.1:5000", 123, Path("/x/mlflow.log")).line()
    assert line.split()[:3] == ["mlflow", "up", "http://127.0.0.1:5000"]
    assert "pid=123" in line
    assert "log=/x/mlflow.log" in line
    down = ComponentStatus("redis", False, "127.0.0.1:6379").line()
    assert "down" in down
    assert "(system service)" in down


def test_cli_env_prints_exports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "export S3_ENDPOINT_URL=" in out
    assert "export MLFLOW_TRACKING_URI=" in out


def test_cli_rejects_unknown_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "minio"]) == 1
    assert "unknown components" in capsys.readouterr().err


def test_missing_binary_names_the_install_command() -> None:
    with pytest.raises(MissingDependencyError, match=r"apt-get install -y no-such-package"):
        require_binary("no-such-binary-xyz", "no-such-package", install=False)


def test_probes_report_closed_ports_as_down() -> None:
    port = free_port()
    assert not redis_ready("127.0.0.1", port)
    assert not rabbitmq_ready("127.0.0.1", port)
    assert not postgres_ready(f"postgresql://postgres@127.0.0.1:{port}/postgres")
