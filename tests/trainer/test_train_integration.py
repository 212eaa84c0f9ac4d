"""The trainer against the real Feast offline store and MLflow server (PostgreSQL + S3 artifacts)."""

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from platform_fixtures import QUICK_MODEL

from mlops_common.features import FEATURE_NAMES
from trainer.__main__ import main as trainer_main
from trainer.model import onnx_probabilities
from trainer.registry import CHALLENGER, CHAMPION
from trainer.settings import Settings
from trainer.train import TrainingRequest, train

pytestmark = pytest.mark.integration

WEAK_MODEL = {"max_iter": 1, "max_leaf_nodes": 2, "early_stopping": False}


def test_registered_model_carries_its_contract(trained_platform):
    settings = trained_platform.settings(Settings)
    result = trained_platform.first_model
    client = MlflowClient(settings.mlflow_tracking_uri)
    # Other tests may promote later versions of this model: look at the one this session trained first.
    champion = client.get_model_version(settings.registered_model_name, result.version)
    assert champion.tags["gate.decision"] == "promoted"
    assert result.metrics["holdout_roc_auc"] > 0.7
    assert result.parity_max_abs_diff <= 1e-5
    run = client.get_run(champion.run_id)
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(result.metrics["holdout_roc_auc"])
    assert "holdout_log_loss" in run.data.metrics
    assert run.data.tags["gate.decision"] == "promoted"
    artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
    assert {"features.json", "triton"} <= artifacts  # MLflow 3 keeps the model itself as a LoggedModel
    contract = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/features.json")
    assert contract["feature_names"] == list(FEATURE_NAMES)
    profile = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/reference_profile.json")
    assert list(profile["features"]) == list(FEATURE_NAMES)
    assert profile["features"]["AMT_INCOME_TOTAL"]["rows"] == int(run.data.params["training_rows"])
    assert sum(profile["score"]["fractions"]) == pytest.approx(1.0)
    assert profile["score"]["rows"] == int(run.data.params["holdout_rows"])
    model = mlflow.onnx.load_model(f"models:/{settings.registered_model_name}/{result.version}")
    assert onnx_probabilities(model, np.zeros((3, len(FEATURE_NAMES)), np.float32)).shape == (3, 2)


def test_champion_gate_in_both_directions(trained_platform, unique_name):
    settings = trained_platform.settings(Settings, registered_model_name=unique_name("gate"))
    client = MlflowClient(settings.mlflow_tracking_uri)
    name = settings.registered_model_name

    first = train(settings, TrainingRequest(hyperparameters=QUICK_MODEL))
    assert first.decision.promoted
    assert first.decision.reason == "no champion yet"

    weak = train(settings, TrainingRequest(hyperparameters=WEAK_MODEL))
    assert not weak.decision.promoted
    assert weak.decision.reason == "worse than the champion"
    assert weak.decision.champion_auc > weak.decision.challenger_auc
    assert client.get_model_version_by_alias(name, CHAMPION).version == first.version
    assert client.get_model_version_by_alias(name, CHALLENGER).version == weak.version
    tags = client.get_model_version(name, weak.version).tags
    assert tags["gate.decision"] == "kept_as_challenger"
    assert float(tags["gate.challenger_auc"]) == pytest.approx(weak.decision.challenger_auc, abs=1e-6)
    assert float(tags["gate.champion_auc"]) == pytest.approx(weak.decision.champion_auc, abs=1e-6)

    # The same recipe again scores the same on the same holdout: "at least as good" promotes it.
    again = train(settings, TrainingRequest(hyperparameters=QUICK_MODEL))
    assert again.decision.promoted
    assert again.decision.champion_version == first.version
    assert client.get_model_version_by_alias(name, CHAMPION).version == again.version


def test_cli_refuses_unknown_hyperparameters_clearly(trained_platform, monkeypatch, capsys):
    for key, value in trained_platform.env.items():
        monkeypatch.setenv(key, value)
    assert trainer_main(["--param", "n_estimators=5"]) == 2
    assert "unknown hyperparameter(s) n_estimators" in capsys.readouterr().err


def test_gate_replaces_a_champion_whose_artifacts_are_gone(
    trained_platform, unique_name, mlflow_server, s3_server, monkeypatch, capsys
):
    """A registry that outlived its artifact store (the re-cloned .stack/ of the bug report)."""
    settings = trained_platform.settings(Settings, registered_model_name=unique_name("orphaned"))
    name = settings.registered_model_name
    client = MlflowClient(settings.mlflow_tracking_uri)
    first = train(settings, TrainingRequest(hyperparameters=QUICK_MODEL))
    model_id = client.get_model_version(name, first.version).source.removeprefix("models:/")
    bucket = mlflow_server.artifacts_destination.removeprefix("s3://").split("/", 1)[0]
    s3 = s3_server.client()
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
        if f"/{model_id}/" in obj["Key"]
    ]
    assert any(key.endswith("/MLmodel") for key in keys)
    for key in keys:
        s3.delete_object(Bucket=bucket, Key=key)

    for key, value in {**trained_platform.env, "REGISTERED_MODEL_NAME": name}.items():
        monkeypatch.setenv(key, value)
    assert trainer_main(["--param", "max_iter=60"]) == 0
    out, err = capsys.readouterr()
    assert f"registered {name} version 2" in out
    assert f"PROMOTED to champion (champion version {first.version} cannot be loaded" in out
    # The trainer's log (stderr) says what is wrong, the likely cause and the fix.
    [warning] = [line for line in err.splitlines() if "cannot be loaded from" in line]
    assert f"champion version {first.version} of {name}" in warning
    assert f"models:/{model_id}" in warning
    assert "make stack-reset" in warning
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert champion.version == "2"
    assert champion.tags["gate.decision"] == "promoted"
    assert champion.tags["gate.champion_version"] == first.version
    assert "cannot be loaded" in champion.tags["gate.reason"]
    # The CLI's profile (none given: `default`) is recorded on the version and its run.
    assert champion.tags["training_profile"] == "default"
    assert client.get_run(champion.run_id).data.tags["training_profile"] == "default"


def test_no_promote_keeps_the_champion_and_the_registry_explains_itself(trained_platform, unique_name):
    settings = trained_platform.settings(Settings, registered_model_name=unique_name("candidate"))
    client = MlflowClient(settings.mlflow_tracking_uri)
    name = settings.registered_model_name
    first = train(settings, TrainingRequest(hyperparameters=QUICK_MODEL))
    candidate = train(settings, TrainingRequest(hyperparameters=QUICK_MODEL, promote=False))

    assert not candidate.decision.promoted
    assert candidate.decision.reason == "promotion not requested"
    assert client.get_model_version_by_alias(name, CHAMPION).version == first.version
    assert client.get_model_version_by_alias(name, CHALLENGER).version == candidate.version
    # The MLflow UI answers "which model is champion and why" from the descriptions.
    assert "FeatureService credit_default_v1" in client.get_registered_model(name).description
    assert client.get_model_version(name, first.version).description.startswith("CHAMPION: no champion yet.")
    candidate_text = client.get_model_version(name, candidate.version).description
    assert candidate_text.startswith("CHALLENGER: promotion not requested.")
    assert f"champion then: version {first.version}" in candidate_text
    experiment = client.get_experiment_by_name(settings.mlflow_experiment_name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
