"""``mlops`` without the platform: every subcommand's help, the installed entry point, and one-line
errors with exit code 2 for bad input and unreachable components."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlops_cli.app import app
from mlops_common.settings import REPO_ROOT

runner = CliRunner()

COMMANDS = [
    [],
    ["stack"],
    ["stack", "up"],
    ["stack", "down"],
    ["stack", "reset"],
    ["stack", "status"],
    ["stack", "env"],
    ["data"],
    ["features"],
    ["train"],
    ["model"],
    ["model", "status"],
    ["model", "promote"],
    ["model", "rollback"],
    ["model", "history"],
    ["predict"],
    ["score"],
    ["logs"],
    ["logs", "query"],
    ["dashboards"],
    ["bench"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "mlops")
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: mlops" in result.output


def test_bench_names_its_benchmarks_and_refuses_others():
    result = runner.invoke(app, ["bench", "cpu"])
    assert result.exit_code == 2
    assert "serving" in result.output
    assert "logging" in result.output


def test_train_help_offers_params_config_no_promote_and_profiles():
    result = runner.invoke(app, ["train", "--help"])
    assert all(option in result.output for option in ("--param", "--config", "--no-promote", "--profile"))


@pytest.fixture
def offline_env(tmp_path) -> dict[str, str]:
    """Nothing listens at these addresses, and no local stack is found."""
    return {
        "STACK_DIR": str(tmp_path / "no-stack"),
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "TRITON_HTTP_URL": "127.0.0.1:9",
        "BFF_URL": "http://127.0.0.1:9",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
    }


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("mlops: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["model", "status"], ("cannot reach MLflow at http://127.0.0.1:9",)),
        (["model", "promote", "3", "--reason", "x"], ("cannot reach MLflow",)),
        (["model", "rollback", "--reason", "x"], ("cannot reach MLflow",)),
        (["model", "history"], ("cannot reach MLflow",)),
        (["predict"], ("cannot reach the prediction API at http://127.0.0.1:9/predict",)),
        (["predict", "--json", "{oops"], ("--json: not valid JSON",)),
        (["predict", "--json", "{}", "--applicant", "1"], ("not both",)),
        (["logs", "query", "--since", "yesterday-ish"], ("--since 'yesterday-ish'",)),
        (["logs", "query", "--since", "now"], ("is not before",)),
        (["logs", "query", "--format", "parquet"], ("--format parquet needs --output",)),
        (["logs", "query", "--since", "5m"], ("cannot read the inference logs",)),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_input_and_unreachable_components_are_one_line_exit_2(offline_env, args, fragments):
    _one_line_error(runner.invoke(app, args, env=offline_env), *fragments)


def test_invalid_settings_are_one_line_exit_2(offline_env):
    _one_line_error(
        runner.invoke(app, ["model", "status"], env={**offline_env, "HTTP_TIMEOUT_S": "-1"}), "HTTP_TIMEOUT_S"
    )


def test_usage_errors_are_click_usage_errors():
    result = runner.invoke(app, ["model", "promote", "3"])  # --reason missing
    assert result.exit_code == 2
    assert "--reason" in result.output


def test_installed_entry_point_and_imports_need_no_pythonpath(tmp_path):
    """`make setup` installs the platform editable: `mlops` and every service import from anywhere."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bin_dir = Path(sys.executable).parent
    imports = "import bff, dashboards, devstack, feature_store, log_worker, mlops_cli, mlops_common, model_sync"
    imports += ", trainer, synthetic_home_credit, credit_features"
    subprocess.run([sys.executable, "-c", imports], cwd=tmp_path, env=env, check=True)
    result = subprocess.run(
        [bin_dir / "mlops", "--help"], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    )
    assert "model" in result.stdout
    assert "logs" in result.stdout
    # The images keep `python -m <service>`.
    subprocess.run(
        [sys.executable, "-m", "log_worker.reader", "--help"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    assert (REPO_ROOT / "services" / "mlops_cli" / "__main__.py").exists()
