"""python -m trainer [--profile NAME] [--config FILE] [--param name=value ...] | --list-profiles"""

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mlops_common.errors import DependencyUnavailableError
from mlops_common.jobs import EXIT_BAD_REQUEST, EXIT_DEPENDENCY_UNAVAILABLE, JobReporter
from mlops_common.logging import configure_logging
from mlops_common.raw_tables import RawDataError
from mlops_common.training_profiles import (
    DEFAULT_PROFILE,
    TrainingProfile,
    TrainingProfileError,
    load_training_profiles,
    training_profile,
)
from trainer.dataset import TrainingDataError
from trainer.model import ParityError
from trainer.settings import Settings
from trainer.train import TrainingRequest, train

PROFILES_FILE = Path(__file__).with_name("profiles.yaml")
# Tag of the MLflow run and the registered version: the profile the model was trained from.
PROFILE_TAG = "training_profile"


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _request(args: argparse.Namespace) -> TrainingRequest:
    """The profile's recipe, with what the command line sets explicitly on top of it."""
    profile = training_profile(PROFILES_FILE, args.profile)
    config = profile.hyperparameters.as_dict()
    if args.config:
        overrides = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(overrides, dict):
            raise SystemExit(f"{args.config}: expected a mapping of hyperparameters, got {type(overrides).__name__}")
        config.update(overrides)
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--param {item!r}: expected name=value")
        config[name] = _parse_value(value)
    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--tag {item!r}: expected key=value")
        tags[key] = value
    # A fact of the run, not a label to choose: --tag cannot override it.
    tags[PROFILE_TAG] = args.profile
    return TrainingRequest(
        hyperparameters=config,
        holdout_fraction=profile.holdout_fraction if args.holdout_fraction is None else args.holdout_fraction,
        seed=profile.seed if args.seed is None else args.seed,
        label_time=args.label_time,
        promote=not args.no_promote,
        tags=tags,
    )


def _resources(profile: TrainingProfile) -> str:
    requests, limits = profile.resources.requests, profile.resources.limits
    text = f"cpu {requests.cpu}-{limits.cpu}, memory {requests.memory}-{limits.memory}"
    if profile.gpu:
        text += f", {profile.gpu.count} GPU"
    if profile.node_selector:
        text += ", nodes " + ",".join(f"{key}={value}" for key, value in profile.node_selector.items())
    return text


def _list_profiles() -> str:
    profiles = load_training_profiles(PROFILES_FILE)
    width = max(map(len, profiles))
    return "\n".join(
        f"{name:<{width}}  {profile.description}\n{'':<{width}}  {_resources(profile)}"
        for name, profile in profiles.items()
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Train, export and register the model.")
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"training profile of {PROFILES_FILE.name} (default: %(default)s); the options below override it",
    )
    parser.add_argument("--list-profiles", action="store_true", help="print the training profiles and exit")
    parser.add_argument("--config", type=Path, help="YAML/JSON file of HistGradientBoosting hyperparameters")
    parser.add_argument("--param", action="append", default=[], help="hyperparameter override, name=value")
    parser.add_argument("--holdout-fraction", type=float, help="default: the profile's")
    parser.add_argument("--seed", type=int, help="default: the profile's")
    parser.add_argument("--label-time", type=datetime.fromisoformat, help="ISO time the labels were known")
    parser.add_argument(
        "--no-promote", action="store_true", help="register as challenger only; champion stays where it is"
    )
    parser.add_argument(
        "--tag", action="append", default=[], help="key=value recorded on the run and the version (e.g. why it ran)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.list_profiles:
            print(_list_profiles())
            return 0
        request = _request(args)
    except TrainingProfileError as err:
        print(f"trainer: {err}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        result = train(settings, request)
    except (RawDataError, TrainingDataError, ParityError, ValueError) as err:
        print(f"trainer: {err}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    decision = result.decision
    try:
        JobReporter(settings).result(
            registered_model=settings.registered_model_name,
            version=result.version,
            run_id=result.run_id,
            promoted=decision.promoted,
            gate=decision.reason,
            holdout_roc_auc=round(result.metrics["holdout_roc_auc"], 6),
        )
    except DependencyUnavailableError as err:  # retried: the next attempt registers a version of its own
        print(f"trainer: version {result.version} is registered, but {err}", file=sys.stderr)
        return EXIT_DEPENDENCY_UNAVAILABLE
    print(
        f"registered {settings.registered_model_name} version {result.version} (run {result.run_id})\n"
        f"  holdout ROC AUC {result.metrics['holdout_roc_auc']:.4f}, "
        f"log loss {result.metrics['holdout_log_loss']:.4f}, "
        f"ONNX parity {result.parity_max_abs_diff:.2g}\n"
        f"  gate: {'PROMOTED to champion' if decision.promoted else 'kept as challenger'} ({decision.reason}; "
        f"challenger {decision.challenger_auc:.4f} vs champion "
        f"{'none' if decision.champion_auc is None else f'{decision.champion_auc:.4f}'})\n"
        f"  MLflow UI: {settings.mlflow_tracking_uri}/#/models/{settings.registered_model_name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
