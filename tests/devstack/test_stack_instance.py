"""A stack's identity (stack.json) and the port check that names another clone's stack."""

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devstack.instance import StackInstance, StackRecordError
from devstack.ports import PortClaim, port_conflicts
from devstack.processes import free_port, http_ok, wait_until_healthy
from devstack.settings import Settings


def test_instance_is_created_once_and_recorded(tmp_path: Path) -> None:
    settings = Settings(stack_dir=tmp_path / ".stack")
    assert StackInstance.load(settings.stack_dir) is None

    first = StackInstance.load_or_create(settings)
    assert first == StackInstance.load_or_create(settings) == StackInstance.load(settings.stack_dir)
    assert first.mlflow_db_name == f"mlflow_{first.id}"
    assert first.feast_project == f"credit_default_{first.id}"
    assert first.rabbitmq_vhost == f"mlops-{first.id}"
    record = json.loads((settings.stack_dir / "stack.json").read_text())
    assert record["stack_dir"] == str(settings.stack_dir.resolve())

    # A new stack directory is a new platform: new names in every shared service.
    other = StackInstance.load_or_create(Settings(stack_dir=tmp_path / "other"))
    assert other.id != first.id
    assert {other.mlflow_db_name, other.feast_project, other.rabbitmq_vhost}.isdisjoint(
        {first.mlflow_db_name, first.feast_project, first.rabbitmq_vhost}
    )


def test_explicit_names_are_kept_and_the_record_wins_later(tmp_path: Path) -> None:
    settings = Settings(stack_dir=tmp_path, feast_project="my_project", rabbitmq_vhost="my-vhost")
    instance = StackInstance.load_or_create(settings)
    assert (instance.feast_project, instance.rabbitmq_vhost) == ("my_project", "my-vhost")
    assert instance.mlflow_db_name == f"mlflow_{instance.id}"
    # A stale FEAST_PROJECT later (e.g. exported in a shell) does not move the recorded stack.
    later = StackInstance.load_or_create(Settings(stack_dir=tmp_path, feast_project="stale"))
    assert later.bind(Settings(stack_dir=tmp_path, feast_project="stale")).feast_project == "my_project"


def test_bound_settings_give_the_platform_its_names(tmp_path: Path) -> None:
    settings = Settings(stack_dir=tmp_path, rabbitmq_url="amqp://user:p%40ss@127.0.0.1:5673/")
    with pytest.raises(ValueError, match="feast_project is unset"):
        settings.platform_env()
    bound = StackInstance.load_or_create(settings).bind(settings)
    env = bound.platform_env()
    assert env["FEAST_PROJECT"] == bound.feast_project
    assert env["RABBITMQ_URL"] == f"amqp://user:p%40ss@127.0.0.1:5673/{bound.rabbitmq_vhost}"
    assert env["LOG_SPOOL_DIR"] == str(tmp_path / "bff-log-spool")
    assert bound.rabbitmq_user == "user"
    assert bound.mlflow_backend_store_uri.endswith(f"/{bound.mlflow_db_name}")


def test_unreadable_record_names_the_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text('{"id": "ab"')
    with pytest.raises(StackRecordError, match=r"stack\.json is unreadable.*make stack-reset"):
        StackInstance.load_or_create(Settings(stack_dir=tmp_path))


@contextmanager
def listener_in(workdir: Path) -> Iterator[tuple[int, int]]:
    """A real process listening on a free port with ``workdir`` as its working directory: (pid, port)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_healthy(lambda: http_ok(f"http://127.0.0.1:{port}/"), 10)
        yield server.pid, port
    finally:
        server.terminate()
        server.wait()


def test_a_port_held_by_another_stack_names_that_stack(tmp_path: Path) -> None:
    # A stand-in for another clone's daemon: its working directory is inside that clone's .stack/.
    other_clone = tmp_path / "other-clone"
    StackInstance.load_or_create(Settings(stack_dir=other_clone / ".stack"))
    with listener_in(other_clone / ".stack" / "seaweedfs") as (_, port):
        claims = [PortClaim("seaweedfs", port, "S3_ENDPOINT_URL"), PortClaim("bff", free_port(), "BFF_PORT")]
        [conflict] = port_conflicts(claims)
        assert conflict == (
            f"the local stack in {other_clone / '.stack'} (stop it with `make -C {other_clone} stack-down`) "
            f"holds ports of this stack: seaweedfs {port}; stop it, or move them with S3_ENDPOINT_URL"
        )
        # The stack's own running daemon holds its port rightly.
        assert port_conflicts([PortClaim("seaweedfs", port, "S3_ENDPOINT_URL", ours=True)]) == []


def test_a_port_held_by_a_stranger_is_named_and_a_free_one_passes(tmp_path: Path) -> None:
    with listener_in(tmp_path / "elsewhere") as (pid, port):
        [conflict] = port_conflicts([PortClaim("mlflow", port, "MLFLOW_TRACKING_URI")])
    assert conflict.startswith(f"pid {pid} (")
    assert f"not a devstack process holds ports of this stack: mlflow {port}; " in conflict
    assert conflict.endswith("move them with MLFLOW_TRACKING_URI")
    assert port_conflicts([PortClaim("mlflow", free_port(), "MLFLOW_TRACKING_URI")]) == []
