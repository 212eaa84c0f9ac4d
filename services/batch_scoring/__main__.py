"""python -m batch_scoring --output s3://bucket/prefix (--input FILE | --as-of TIME [--input IDS]) ..."""

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime

from tqdm import tqdm

from batch_scoring.inputs import InputError
from batch_scoring.job import JobSpec, output_uri, run_job
from batch_scoring.settings import Settings
from mlops_common.errors import DependencyUnavailableError, InferenceError
from mlops_common.jobs import EXIT_BAD_REQUEST, EXIT_DEPENDENCY_UNAVAILABLE, EXIT_MODEL_ERROR, JobReporter
from mlops_common.logging import configure_logging


def _as_of(text: str) -> datetime:
    if text == "now":  # a scheduled run (the chart's CronJob): the portfolio as the store knows it now
        return datetime.now(UTC)
    try:
        return datetime.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-01T00:00:00Z)") from err


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m batch_scoring",
        description=(
            "Score a table through the model Triton serves and write one Parquet file of results, "
            "<output>/<job id>.parquet, complete or not at all."
        ),
    )
    cli.add_argument(
        "--input",
        help="s3://bucket/key or a local path, .parquet or .csv: feature rows (every feature column, "
        "SK_ID_CURR optional); with --as-of, a table whose SK_ID_CURR column names the applicants",
    )
    cli.add_argument(
        "--as-of",
        type=_as_of,
        help="features from the offline store as of this ISO time, or `now` (point in time); without "
        "--input, every applicant the store knows at that time",
    )
    cli.add_argument("--output", required=True, help="s3://bucket/prefix or a local folder")
    cli.add_argument("--job-id", help="names the output; a rerun with the same id replaces it (default: a new id)")
    cli.add_argument("--model-version", help="a version loaded in Triton (default: the champion the API serves)")
    cli.add_argument("--chunk-rows", type=int, help="rows read and scored at a time (BATCH_SCORING_CHUNK_ROWS)")
    cli.add_argument("--in-flight", type=int, help="Triton calls under way at once (BATCH_SCORING_IN_FLIGHT)")
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = {
        name: value
        for name, value in (("batch_scoring_chunk_rows", args.chunk_rows), ("batch_scoring_in_flight", args.in_flight))
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValueError as err:
        print(f"batch_scoring: {err}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    configure_logging(settings.log_level, settings.log_format)
    job_id = args.job_id or uuid.uuid4().hex[:12]
    reporter = JobReporter(settings)
    try:
        spec = JobSpec(job_id, args.output, args.input, args.as_of, args.model_version)
        # A bar on a terminal, nothing in a pod's log (tqdm turns itself off without a TTY).
        with tqdm(unit="rows", unit_scale=True, disable=None, desc=job_id) as bar:
            scored = 0  # bar.n stays 0 where tqdm is off

            def progress(rows: int) -> None:
                nonlocal scored
                scored += rows
                bar.update(rows)
                reporter.progress(rows_scored=scored)

            result = asyncio.run(run_job(spec, settings, progress=progress))
    except InputError as err:
        print(f"batch_scoring: {err}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    except DependencyUnavailableError as err:
        print(f"batch_scoring: {err}; nothing was written to {output_uri(args.output, job_id)}", file=sys.stderr)
        return EXIT_DEPENDENCY_UNAVAILABLE
    except InferenceError as err:
        print(f"batch_scoring: {err}; nothing was written", file=sys.stderr)
        return EXIT_MODEL_ERROR
    try:
        reporter.result(
            output=result.output,
            rows_scored=result.rows_scored,
            rows_without_features=result.rows_without_features,
            model_name=result.model_name,
            model_version=result.model_version,
            seconds=round(result.seconds, 3),
        )
    except DependencyUnavailableError as err:  # a rerun writes the same file again, and reports it
        print(f"batch_scoring: {result.output} is written, but {err}", file=sys.stderr)
        return EXIT_DEPENDENCY_UNAVAILABLE
    rate = result.rows_scored / result.seconds if result.seconds else 0.0
    print(
        f"job {result.job_id}: scored {result.rows_scored:,} rows with {result.model_name} version "
        f"{result.model_version} in {result.seconds:.1f} s ({rate:,.0f} rows/s) -> {result.output}"
        + (
            f"\n  {result.rows_without_features:,} applicants had no features as of "
            f"{args.as_of.isoformat()}: not scored"
            if result.rows_without_features
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
