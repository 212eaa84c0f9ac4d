"""python -m feature_store {bootstrap,upload,ingest,apply,materialize,run,wait-run}"""

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from feature_store import bootstrap, pipeline, runs
from feature_store.settings import Settings
from mlops_common.logging import configure_logging
from mlops_common.raw_tables import RawDataError
from mlops_common.settings import REPO_ROOT


def _event_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    if value > datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{text} is in the future; features cannot be known before they exist")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feature_store", description="The feature pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)
    boot = commands.add_parser("bootstrap", help="put raw CSVs into the raw bucket unless they are there")
    boot.add_argument("--source", choices=bootstrap.SOURCES, default="synthetic")
    boot.add_argument("--applicants", type=int, default=20_000, help="synthetic applicants (train + test)")
    boot.add_argument("--seed", type=int, default=7)
    boot.add_argument("--url", default="", help="with --source url: the CSVs are <url>/<file>")
    upload = commands.add_parser("upload", help="copy the raw CSVs from a folder to the raw bucket")
    upload.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data")
    for name, text in (
        ("ingest", "raw CSVs in S3 -> Parquet offline store"),
        ("run", "ingest, apply and materialize"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--event-time", type=_event_time, help="ISO time the snapshot describes (default: now)")
        if name == "run":
            command.add_argument("--run-id", help="record the completed run under this id (feature_store.runs)")
    wait = commands.add_parser("wait-run", help="wait until the run with this id completed")
    wait.add_argument("--run-id", required=True)
    wait.add_argument("--timeout", type=float, default=7200.0, help="seconds")
    commands.add_parser("apply", help="register the Feast definitions")
    commands.add_parser("materialize", help="offline store -> online store")
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        match args.command:
            case "bootstrap":
                bootstrap.bootstrap(
                    settings, source=args.source, applicants=args.applicants, seed=args.seed, url=args.url
                )
            case "upload":
                pipeline.upload_raw(settings, args.data_dir)
            case "ingest":
                pipeline.ingest(settings, event_time=args.event_time)
            case "apply":
                pipeline.apply(settings)
            case "materialize":
                pipeline.materialize(settings)
            case "run":
                pipeline.run(settings, event_time=args.event_time)
                if args.run_id:
                    runs.record_run(settings, args.run_id)
            case "wait-run":
                runs.wait_for_run(settings, args.run_id, timeout_s=args.timeout)
    except (RawDataError, FileNotFoundError, ValueError, TimeoutError) as err:
        print(f"feature_store {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
