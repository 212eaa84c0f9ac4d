"""python -m trainer [--config FILE] [--param name=value ...]"""

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mlops_common.logging import configure_logging
from mlops_common.raw_tables import RawDataError
from trainer.dataset import TrainingDataError
from trainer.model import ParityError
from trainer.settings import Settings
from trainer.train import TrainingRequest, train


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _request(args: argparse.Namespace) -> TrainingRequest:
    config: dict[str, Any] = {}
    if args.config:
        config = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(config, dict):
            raise SystemExit(f"{args.config}: expected a mapping of hyperparameters, got {type(config).__name__}")
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
    return TrainingRequest(
        hyperparameters=config,
        holdout_fraction=args.holdout_fraction,
        seed=args.seed,
        label_time=args.label_time,
        promote=not args.no_promote,
        tags=tags,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Train, export and register the model.")
    parser.add_argument("--config", type=Path, help="YAML/JSON file of HistGradientBoosting hyperparameters")
    parser.add_argument("--param", action="append", default=[], help="hyperparameter override, name=value")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label-time", type=datetime.fromisoformat, help="ISO time the labels were known")
    parser.add_argument(
        "--no-promote", action="store_true", help="register as challenger only; champion stays where it is"
    )
    parser.add_argument(
        "--tag", action="append", default=[], help="key=value recorded on the run and the version (e.g. why it ran)"
    )
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        result = train(settings, _request(args))
    except (RawDataError, TrainingDataError, ParityError, ValueError) as err:
        print(f"trainer: {err}", file=sys.stderr)
        return 2
    decision = result.decision
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
