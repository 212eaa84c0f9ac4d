"""``mlops`` against the session's real MLflow, S3, Feast, Triton, model sync, BFF and log worker.

The registry tests work on a model name of their own (trained here with ``mlops train``), so the session's
``trained_platform`` champion is left as it is."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from serving_fixtures import Serving, start_serving, wait_for
from typer.testing import CliRunner

from devstack.components import app_daemon
from devstack.processes import free_port
from mlops_cli.app import app
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import (
    InferenceLogRecord,
    InferenceLogStoreSettings,
    open_inference_log_table,
    records_to_table,
    write_inference_log_rows,
)

pytestmark = pytest.mark.integration
runner = CliRunner()


def invoke(env: dict[str, str], *args: str):
    """One CLI run; the root logger's handlers are restored afterwards (the trainer's logging setup would
    otherwise keep writing to this run's captured, closed stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return runner.invoke(app, list(args), env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def mlops(env: dict[str, str], *args: str, code: int = 0):
    result = invoke(env, *args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def status(env: dict[str, str]) -> dict:
    return json.loads(mlops(env, "model", "status", "--json").stdout)


@pytest.fixture(scope="module")
def cli_env(trained_platform, unique_name, tmp_path_factory) -> dict[str, str]:
    """The session's platform under a registered model and Triton model of this module's own; no local stack."""
    return {
        **trained_platform.env,
        "STACK_DIR": str(tmp_path_factory.mktemp("cli") / "no-stack"),
        "REGISTERED_MODEL_NAME": unique_name("cli-model"),
        "TRITON_MODEL_NAME": unique_name("cli_model", sep="_"),
        "MLFLOW_EXPERIMENT_NAME": unique_name("cli-experiment"),
        # A log topology of its own: the session's queue holds every earlier module's records (no worker
        # reads it), which this module's worker would have to merge before its own.
        "INFERENCE_LOG_EXCHANGE": unique_name("inference-logs"),
        "INFERENCE_LOG_QUEUE": unique_name("inference-logs"),
        "BFF_PORT": str(free_port()),
        "BFF_METRICS_PORT": str(free_port()),
        "MODEL_SYNC_METRICS_PORT": str(free_port()),
        "LOG_WORKER_METRICS_PORT": str(free_port()),
        "TRITON_RUNTIME": "python",
        "SYNC_INTERVAL_S": "1",
        "BATCH_MAX_AGE_S": "1",
    }


@pytest.fixture(scope="module")
def two_versions(cli_env) -> dict[str, str]:
    """Version 1 promoted by the gate, version 2 trained with --no-promote (a challenger only)."""
    first = mlops(cli_env, "train", "--param", "max_iter=30")
    assert "PROMOTED to champion" in first.output
    second = mlops(cli_env, "train", "--param", "max_iter=20", "--no-promote")
    assert "kept as challenger" in second.output
    return cli_env


def test_model_status_shows_the_session_champion(trained_platform, tmp_path):
    env = {**trained_platform.env, "STACK_DIR": str(tmp_path / "no-stack")}
    # Other tests may have promoted later versions of the session's model: compare with MLflow itself.
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias(env["REGISTERED_MODEL_NAME"], "champion")
    champion_auc = client.get_run(champion.run_id).data.metrics["holdout_roc_auc"]
    result = mlops(env, "model", "status")
    assert f"champion    version {champion.version}" in result.output
    assert "gate: promoted" in result.output
    report = status(env)
    assert report["champion"]["version"] == champion.version
    assert report["champion"]["auc"] == pytest.approx(champion_auc)


def test_train_no_promote_keeps_the_champion(two_versions):
    report = status(two_versions)
    assert report["champion"]["version"] == "1"
    assert report["challenger"]["version"] == "2"
    assert report["challenger"]["tags"]["gate.decision"] == "kept_as_challenger"


def test_unknown_version_and_nothing_to_roll_back_are_one_line_errors(two_versions):
    result = mlops(two_versions, "model", "promote", "99", "--reason", "typo", code=2)
    assert "has no version 99 (versions: 1, 2)" in result.output
    result = mlops(two_versions, "model", "rollback", "--reason", "nothing before 1", code=2)
    assert "records no previous champion" in result.output
    mlops(two_versions, "model", "promote", "1", "--reason", "again", code=2)


@dataclass
class Load:
    """Predictions sent continuously to the BFF; every answer must be a 200."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)

    def run(self) -> None:
        body = {name: 1.0 for name in FEATURE_NAMES}
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(f"{self.url}/predict", json=body)
                    if response.status_code == 200:
                        self.ok += 1
                        self.versions.add(response.json()["model_version"])
                    else:
                        self.failed.append(f"{response.status_code} {response.text[:200]}")
                except httpx.HTTPError as err:
                    self.failed.append(repr(err))


@pytest.fixture(scope="module")
def cli_serving(two_versions, tmp_path_factory) -> Iterator[Serving]:
    logs = tmp_path_factory.mktemp("cli-serving")
    serving = start_serving(two_versions, logs)
    worker = app_daemon("log_worker", "log_worker", logs / "log_worker.log", env=two_versions, die_with_parent=True)
    worker.start()
    try:
        wait_for(lambda: status(two_versions)["triton_serves"] == ["1"], 120, "Triton serving version 1")
        yield serving
    finally:
        worker.stop()
        serving.bff.stop()
        serving.model_sync.stop()


def test_promote_then_rollback_move_the_alias_with_audit_tags_and_triton_follows_under_load(cli_serving):
    env = {**cli_serving.env, "BFF_URL": cli_serving.bff_url}
    load = Load(cli_serving.bff_url)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        result = mlops(env, "model", "promote", "2", "--reason", "challenger reviewed", "--wait", "--timeout", "120")
        assert "Triton serves version 2" in result.output
        report = status(env)
        assert report["champion"]["version"] == "2"
        assert report["triton_serves"] == ["2"]
        assert report["in_sync"]
        tags = report["champion"]["tags"]
        assert tags["champion.action"] == "promote"
        assert tags["champion.previous"] == "1"
        assert tags["champion.reason"] == "challenger reviewed"
        assert tags["champion.by"]
        assert datetime.fromisoformat(tags["champion.at"]).tzinfo is not None

        result = mlops(env, "model", "rollback", "--reason", "bad canary", "--wait", "--timeout", "120")
        assert "champion of" in result.output
        assert "now version 1 (was 2)" in result.output
        report = status(env)
        assert report["champion"]["version"] == "1"
        assert report["triton_serves"] == ["1"]
        assert report["champion"]["tags"]["champion.previous"] == "2"
        assert report["champion"]["tags"]["champion.action"] == "rollback"
    finally:
        load.stop.set()
        thread.join(timeout=15)
    assert load.failed == [], load.failed[:5]
    assert load.ok > 0
    assert load.versions == {"1", "2"}

    history = json.loads(mlops(env, "model", "history", "--json").stdout)
    assert [(e["action"], e["version"], e["previous"]) for e in history] == [
        ("gate", "1", "none"),
        ("promote", "2", "1"),
        ("rollback", "1", "2"),
    ]
    assert re.search(r"rollback +version 1 +\(was 2 +\) by \S+: bad canary", mlops(env, "model", "history").output)


def test_predict_then_logs_query_finds_the_row_by_request_id(cli_serving, trained_platform):
    env = {**cli_serving.env, "BFF_URL": cli_serving.bff_url}
    applicant = int(trained_platform.tables.application_train["SK_ID_CURR"].iloc[0])
    answer = json.loads(mlops(env, "predict", "--applicant", str(applicant)).stdout)
    request_id = answer["request_id"]

    def logged() -> bool:
        result = invoke(env, "logs", "query", "--request-id", request_id, "--format", "json")
        return result.exit_code == 0 and len(json.loads(result.stdout)) == 1

    # Behind the records of the promote test's load (this module's own queue), which the worker merges first.
    wait_for(logged, 120, f"request {request_id} in the inference logs")
    result = mlops(env, "logs", "query", "--request-id", request_id, "--format", "json")
    (row,) = json.loads(result.stdout)
    assert row["applicant_id"] == applicant
    assert isinstance(row["applicant_id"], int)
    assert row["probability"] == pytest.approx(answer["probability"])
    assert row["model_version"] == answer["model_version"]
    assert set(row["features"]) == set(FEATURE_NAMES)
    assert row["latency_ms"] >= 0
    assert "1 inference-log row from" in result.output  # the summary (stderr)

    table = mlops(env, "logs", "query", "--applicant", str(applicant)).output
    assert request_id in table
    assert str(applicant) in table
    assert "s3://" not in table


@pytest.fixture
def written_logs(trained_platform, s3_server, tmp_path) -> tuple[dict[str, str], list[InferenceLogRecord]]:
    """Records written as the log worker writes them (its own code), in a bucket of this test's own."""
    env = {**trained_platform.env, "STACK_DIR": str(tmp_path / "no-stack"), "LOGS_BUCKET": s3_server.new_bucket("cli")}
    now = datetime.now(UTC)
    records = [
        InferenceLogRecord(
            request_id=f"req-{i}",
            timestamp=now,
            entity_id=100967 if i % 2 else None,
            features={name: float(i) for name in FEATURE_NAMES},
            model_name="credit_default",
            model_version=str(1 + i % 2),
            probability=0.1 * i,
            decision="approve",
            latency_ms=2.5 + i,
        )
        for i in range(4)
    ]
    settings = InferenceLogStoreSettings(**s3_server.settings().model_dump(), logs_bucket=env["LOGS_BUCKET"])
    open_inference_log_table(settings)
    assert write_inference_log_rows(settings, records_to_table(records)) == 4
    # At-least-once delivery: the same records again insert nothing.
    assert write_inference_log_rows(settings, records_to_table(records[:2])) == 0
    return env, records


def test_logs_query_filters_and_keeps_applicant_ids_integers(written_logs, tmp_path):
    env, _ = written_logs
    rows = json.loads(mlops(env, "logs", "query", "--since", "2h", "--format", "json").stdout)
    assert sorted(r["request_id"] for r in rows) == ["req-0", "req-1", "req-2", "req-3"]
    by_applicant = json.loads(mlops(env, "logs", "query", "--applicant", "100967", "--format", "json").stdout)
    assert [r["request_id"] for r in by_applicant] == ["req-1", "req-3"]
    assert all(r["applicant_id"] == 100967 and type(r["applicant_id"]) is int for r in by_applicant)
    assert (
        json.loads(mlops(env, "logs", "query", "--request-id", "req-2", "--format", "json").stdout)[0]["applicant_id"]
        is None
    )

    table = mlops(env, "logs", "query").output
    assert "100967" in table
    assert "100967.0" not in table
    # Two partitions (model versions 1 and 2), one commit: one data file each.
    assert "4 inference-log rows from 2 data files" in table
    assert "model versions 1 (2), 2 (2)" in table

    out = tmp_path / "logs.parquet"
    mlops(env, "logs", "query", "--model-version", "2", "--format", "parquet", "--output", str(out))
    written = pq.read_table(out)
    assert written.column("request_id").to_pylist() == ["req-1", "req-3"]
    assert str(written.schema.field("applicant_id").type) == "int64"


def test_labels_import_writes_the_ground_truth_table_and_names_a_bad_row(trained_platform, s3_server, tmp_path):
    env = {**trained_platform.env, "STACK_DIR": str(tmp_path / "no-stack"), "LOGS_BUCKET": s3_server.new_bucket("cli")}
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "applicant_id,outcome,observed_at\n100002,1,2026-06-01T00:00:00Z\n100003,0,2026-06-01T00:00:00Z\n"
    )
    out = mlops(env, "labels", "import", str(labels)).output
    assert f"2 labels from {labels} into s3://{env['LOGS_BUCKET']}/ground-truth: 2 new, 0 updated" in out
    newer = tmp_path / "newer.csv"
    newer.write_text("applicant_id,outcome,observed_at\n100002,0,2026-07-01T00:00:00Z\n100003,1,2026-05-01T00:00:00Z\n")
    assert "0 new, 1 updated, 1 kept" in mlops(env, "labels", "import", str(newer)).output

    bad = tmp_path / "bad.csv"
    bad.write_text("applicant_id,outcome,observed_at\n100004,yes,2026-06-01T00:00:00Z\n")
    result = mlops(env, "labels", "import", str(bad), code=2)
    assert "line 2: outcome:" in result.output


def test_logs_maintain_and_dlq_run_the_worker_tools(written_logs, unique_name):
    env, _ = written_logs
    out = mlops(env, "logs", "maintain").output
    assert f"s3://{env['LOGS_BUCKET']}/inference-logs: 4 rows; data files 2 -> 2 (compacted)" in out
    assert f"s3://{env['LOGS_BUCKET']}/ground-truth: no table yet" in out
    assert "--unsafe-retention" in mlops(env, "logs", "maintain", "--retention-days", "0", code=2).output

    queues = {"INFERENCE_LOG_EXCHANGE": unique_name("cli-logs"), "INFERENCE_LOG_QUEUE": unique_name("cli-logs")}
    listed = mlops({**env, **queues}, "logs", "dlq", "list").output
    assert f"0 dead-lettered records in {queues['INFERENCE_LOG_QUEUE']}.dlq" in listed
    assert "--yes" in mlops({**env, **queues}, "logs", "dlq", "purge", code=2).output
