"""Issue: a re-cloned (or deleted) ``.stack/`` met the old stack's registry in the machine's PostgreSQL.

The platform runs end to end on a private stack (ingest -> Feast -> train -> MLflow -> model sync ->
Triton), its state folder is deleted by hand, and a new stack with the same settings runs it again.
"""

import shutil
from pathlib import Path

import mlflow
import pytest
import redis
from mlflow import MlflowClient
from platform_fixtures import QUICK_MODEL, ingest_tables, settings_from

from devstack import system_services as sys_svc
from devstack.instance import StackInstance
from devstack.processes import free_port_block
from devstack.settings import Settings
from devstack.stack import LocalStack, PortsTakenError
from model_sync.settings import Settings as ModelSyncSettings
from model_sync.sync import ModelSync
from synthetic_home_credit import generate
from trainer.settings import Settings as TrainerSettings
from trainer.train import TrainingRequest, TrainingResult, train

pytestmark = pytest.mark.integration


def run_platform(stack: LocalStack, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> TrainingResult:
    stack.up()
    env = stack.settings.platform_env()
    # Feast reads the offline store's S3 credentials from the process environment only.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    ingest_tables(env, generate(2000, seed=5), data_dir)
    result = train(settings_from(TrainerSettings, env), TrainingRequest(hyperparameters=QUICK_MODEL))
    sync = ModelSync(settings_from(ModelSyncSettings, env))
    assert sync.sync_once()
    routing, loaded = sync.served_routing()
    assert (routing.champion, routing.challenger, loaded) == (result.version, None, {int(result.version)})
    return result


def shared_state(settings: Settings, instance: StackInstance) -> dict[str, bool]:
    """Whether the instance's database, vhost and Feast keys exist in the machine's services."""
    admin_dsn = sys_svc.ensure_postgres_for(settings)
    client = redis.Redis(*settings.redis_host_port)
    try:
        feast_keys = any(True for _ in client.scan_iter(match="*" + instance.feast_project, count=1000))
    finally:
        client.close()
    return {
        "database": sys_svc.database_exists(admin_dsn, instance.mlflow_db_name),
        "vhost": instance.rabbitmq_vhost in sys_svc.list_vhosts(),
        "feast_keys": feast_keys,
    }


def test_a_new_state_folder_is_a_new_platform(
    private_stack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = private_stack_settings
    first_stack = LocalStack(settings)
    orphan_record = tmp_path / "orphan" / "stack.json"
    second_stack = None
    tracking_uri = mlflow.get_tracking_uri()
    try:
        first = run_platform(first_stack, tmp_path / "data1", monkeypatch)
        first_instance = first_stack.instance
        assert shared_state(settings, first_instance) == {"database": True, "vhost": True, "feast_keys": True}
        # What a user does: stop it, delete the folder (or the clone) and start again.
        first_stack.down()
        orphan_record.parent.mkdir()
        shutil.copy(settings.stack_dir / "stack.json", orphan_record)  # to clean up after the test
        shutil.rmtree(settings.stack_dir)

        second_stack = LocalStack(settings)
        second = run_platform(second_stack, tmp_path / "data2", monkeypatch)
        assert second_stack.instance.id != first_instance.id
        assert second.decision.reason == "no champion yet"
        model_name = settings_from(TrainerSettings, second_stack.settings.platform_env()).registered_model_name
        versions = MlflowClient(settings.mlflow_tracking_uri).search_model_versions(f"name = '{model_name}'")
        assert [(v.version, v.run_id) for v in versions] == [(second.version, second.run_id)]
        assert first.run_id != second.run_id

        # reset removes everything the stack put into the machine's services, and its folder.
        second_instance = second_stack.instance
        second_stack.reset()
        assert shared_state(settings, second_instance) == {"database": False, "vhost": False, "feast_keys": False}
        assert not settings.stack_dir.exists()
        assert StackInstance.load(settings.stack_dir) is None
    finally:
        # train() sets the process-wide tracking URI to this stack's MLflow, which is gone after the test.
        mlflow.set_tracking_uri(tracking_uri)
        if second_stack is not None:
            second_stack.reset()
        first_stack.down()
        # The first stack's state, orphaned by the deleted folder: reset it through its saved record.
        if orphan_record.exists():
            LocalStack(Settings(stack_dir=orphan_record.parent)).reset()
        else:
            first_stack.reset()


def test_up_starts_nothing_when_another_stack_holds_a_port(private_stack_settings: Settings, tmp_path: Path) -> None:
    running = LocalStack(private_stack_settings)
    running.up(["seaweedfs"])
    try:
        # A second clone configured onto the same S3 port.
        clone = tmp_path / "clone" / ".stack"
        second = LocalStack(
            private_stack_settings.model_copy(
                update={"stack_dir": clone, "seaweedfs_internal_base_port": free_port_block(9)}
            )
        )
        with pytest.raises(PortsTakenError) as err:
            second.up()
        message = str(err.value)
        assert message.startswith("nothing was started:\n- ")
        assert f"the local stack in {private_stack_settings.stack_dir} (stop it with" in message
        assert f"holds ports of this stack: seaweedfs {private_stack_settings.s3_host_port[1]}" in message
        # Nothing was started or created for the second stack: no daemons, and no identity yet, so
        # no database, vhost or Feast project either.
        assert not (clone / "run").exists()
        assert not (clone / "stack.json").exists()
    finally:
        running.reset()
