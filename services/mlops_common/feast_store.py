"""Open the Feast FeatureStore of the current environment from settings."""

import os
import string
from pathlib import Path

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from mlops_common.settings import FeastSettings


def feature_store_config(settings: FeastSettings) -> RepoConfig:
    """The environment's feature_store.yaml with its ``${FEAST_*}`` placeholders filled from settings.

    Filling them here (rather than through Feast's own os.path.expandvars) keeps settings the only
    reader of the environment and fails with the placeholder's name when one is unknown.
    """
    path = settings.feast_config_file
    if not path.is_absolute():
        path = settings.feast_repo_path / path
    values = {name.upper(): "" if value is None else str(value) for name, value in settings.model_dump().items()}
    try:
        text = string.Template(path.read_text()).substitute(values)
    except KeyError as err:
        raise ValueError(f"{path}: placeholder ${{{err.args[0]}}} is not a setting") from err
    return RepoConfig(repo_path=Path(settings.feast_repo_path), **yaml.safe_load(text))


def open_feature_store(settings: FeastSettings) -> FeatureStore:
    if settings.feast_s3_endpoint_url:
        # Feast's S3 registry reads its endpoint from the process environment only.
        os.environ["FEAST_S3_ENDPOINT_URL"] = settings.feast_s3_endpoint_url
    return FeatureStore(config=feature_store_config(settings))
