"""Fixtures that bring the platform itself up on the session's servers (see conftest.py for those).

``trained_platform`` runs the real pipeline once per session: synthetic tables -> raw bucket ->
offline store -> Feast apply + materialize (Redis) -> trainer -> MLflow champion. Tests that
change the registry work on a copy of its environment with their own model name.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from feature_store import pipeline
from feature_store.settings import Settings as FeatureStoreSettings
from synthetic_home_credit import HomeCreditTables, generate
from trainer.settings import Settings as TrainerSettings
from trainer.train import TrainingRequest, TrainingResult, train

# Small and quick to fit, but large enough for a stable holdout AUC.
APPLICANTS = 4000
QUICK_MODEL = {"max_iter": 60}


def settings_from(settings_class, env: dict[str, str]):
    """A settings object from an env mapping, without touching the process environment."""
    fields = settings_class.model_fields
    return settings_class(**{k.lower(): v for k, v in env.items() if k.lower() in fields})


@dataclass(frozen=True)
class TrainedPlatform:
    env: dict[str, str]
    data_dir: Path
    tables: HomeCreditTables
    first_model: TrainingResult

    def settings(self, settings_class, **overrides: str):
        return settings_from(settings_class, {**self.env, **{k.upper(): v for k, v in overrides.items()}})


@pytest.fixture(scope="session")
def feast_process_env(s3_server) -> Iterator[None]:
    """Feast reads S3 credentials for its offline store only from the process environment."""
    with pytest.MonkeyPatch.context() as patch:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            patch.setenv(key, s3_server.env()[key])
        yield


def ingest_tables(env: dict[str, str], tables: HomeCreditTables, data_dir: Path) -> FeatureStoreSettings:
    tables.write(data_dir)
    settings = settings_from(FeatureStoreSettings, env)
    pipeline.upload_raw(settings, data_dir)
    pipeline.run(settings)
    return settings


@pytest.fixture(scope="session")
def trained_platform(
    platform_env_factory: Callable[[], dict[str, str]], feast_process_env, tmp_path_factory
) -> TrainedPlatform:
    env = platform_env_factory()
    tables = generate(APPLICANTS, seed=11)
    data_dir = tmp_path_factory.mktemp("data")
    ingest_tables(env, tables, data_dir)
    result = train(settings_from(TrainerSettings, env), TrainingRequest(hyperparameters=QUICK_MODEL))
    assert result.decision.promoted, result.decision
    return TrainedPlatform(env, data_dir, tables, result)
