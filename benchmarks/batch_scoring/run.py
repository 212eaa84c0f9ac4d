"""Batch-scoring benchmark, in one run: the batch-scoring job (``python -m batch_scoring``) on a table of
synthetic feature rows in S3 vs perf_analyzer driving the same Triton model with batch 256.

    .venv/bin/python benchmarks/batch_scoring/run.py --out benchmarks/results/batch_scoring.md

Brings a whole platform up on free ports (``benchmarks/stack.py``), writes ``--rows`` rows (default
1,000,000) as one Parquet file to S3, measures perf_analyzer (batch 256) before and after the job runs,
runs the job at each ``--in-flight`` setting, samples the job process' resident memory every 50 ms, and
writes a markdown report with issue 15's target: job rows/s >= 0.8 x perf_analyzer's batch-256 rows/s.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import pandas as pd
import psutil

from benchmarks.serving.run import TritonTarget, bench_perf_analyzer
from benchmarks.stack import (
    ROOT,
    BenchPlatform,
    command_line,
    load_average,
    machine_summary,
    perf_analyzer_binary,
    settings_from,
    work_dir,
    write_report,
)
from mlops_common.features import ENTITY_KEY, FEATURE_NAMES
from mlops_common.s3 import s3_client
from mlops_common.settings import S3Settings
from mlops_common.triton_config import TritonModelSpec

log = logging.getLogger("benchmarks.batch_scoring")
TARGET = 0.8
PA_CONCURRENCY = (1, 2, 4)
# Rows per row group of the input file: pyarrow decodes a row group whole, so it bounds what the job
# holds of the input (a writer's usual size; pandas' default, 1,048,576, would make this file one group).
INPUT_ROW_GROUP = 131_072


def synthetic_rows(rows: int, seed: int = 5) -> pd.DataFrame:
    """Feature rows of plausible magnitudes, one value in ten missing."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({name: rng.lognormal(8, 2, rows) for name in FEATURE_NAMES})
    table[rng.random(table.shape) < 0.1] = np.nan
    table.insert(0, ENTITY_KEY, np.arange(rows, dtype=np.int64) + 1_000_000)
    return table


def run_job(env: dict[str, str], source: str, output: str, in_flight: int, job_id: str) -> dict:
    """The job as a process of its own: wall time, its own rows/s and its peak resident memory."""
    argv = [sys.executable, "-m", "batch_scoring", "--input", source, "--output", output, "--job-id", job_id]
    argv += ["--in-flight", str(in_flight)]
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"batch_scoring exited {process.returncode}: {err[-2000:]}")
    # "job <id>: scored 1,000,000 rows with <model> version <v> in 12.3 s (81,301 rows/s) -> <uri>"
    match = re.search(r"scored ([\d,]+) rows .* in ([\d.]+) s \(([\d,]+) rows/s\)", out)
    if match is None:
        raise RuntimeError(f"unexpected output of batch_scoring: {out!r}")
    return {
        "in_flight": in_flight,
        "rows": int(match[1].replace(",", "")),
        "job_s": float(match[2]),
        "rows_per_s": float(match[3].replace(",", "")),
        "process_s": time.monotonic() - started,
        "peak_rss_mib": peak / 2**20,
        "command": "python -m batch_scoring " + " ".join(argv[3:]),
    }


def measure(
    env: dict[str, str],
    triton: TritonTarget,
    rows: int,
    in_flights: list[int],
    work: Path,
    *,
    pa_concurrency: tuple[int, ...] = PA_CONCURRENCY,
    measurement_ms: int = 3000,
) -> dict:
    """perf_analyzer (batch 256) before and after the job at each ``in_flights`` setting, on ``rows`` rows
    written to a bucket of the run's own in the platform's S3."""
    s3 = s3_client(settings_from(S3Settings, env))
    bucket = f"batch-scoring-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    body = io.BytesIO()
    synthetic_rows(rows).to_parquet(body, index=False, row_group_size=INPUT_ROW_GROUP)
    s3.put_object(Bucket=bucket, Key="input/rows.parquet", Body=body.getvalue())
    source, output = f"s3://{bucket}/input/rows.parquet", f"s3://{bucket}/scores"

    def perf_analyzer(when: str) -> list[dict]:
        return [
            {**bench_perf_analyzer(triton, 256, c, work, measurement_ms=measurement_ms), "when": when}
            for c in pa_concurrency
        ]

    before = perf_analyzer("before")
    job_env = {**os.environ, **env, "LOG_LEVEL": "WARNING"}
    jobs = [run_job(job_env, source, output, n, f"bench-{n}") for n in in_flights]
    return {
        "rows": rows,
        "input_mib": body.tell() / 2**20,
        "jobs": jobs,
        "perf_analyzer": before + perf_analyzer("after"),
    }


def report(run: dict) -> str:
    machine = machine_summary()
    best = max(run["perf_analyzer"], key=lambda r: r["rows_per_s"])
    lines = [
        "# Batch scoring: the job vs perf_analyzer on the same Triton model",
        "",
        f"Produced by `{run['command']}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, in "
        f"{run['took_s'] / 60:.1f} min; {machine['nproc']} CPUs ({machine['cpu']}), Python {machine['python']}, "
        f"load average at start {run['load_at_start']}, at the end {machine['loadavg']}. Model "
        f"`{run['model_name']}` version {run['model_version']} (Triton's Python-backend runtime, as in the tests). "
        "Triton, the job and perf_analyzer share the machine's CPUs; this machine is shared and noisy: "
        "compare ratios within this run, not across runs.",
        "",
        f"Model configuration: `TritonModelSpec`'s `max_batch_size` {TritonModelSpec().max_batch_size:,}: the job's "
        "calls carry that many rows; perf_analyzer's batch-256 requests in flight at once may be merged by the "
        "dynamic batcher up to it too.",
        "",
        f"Input: {run['rows']:,} synthetic feature rows (one value in ten missing) in one Parquet file in S3 "
        f"({run['input_mib']:.1f} MiB, row groups of {INPUT_ROW_GROUP:,} rows); output: one Parquet file per "
        "run, published when complete.",
        "",
        "## perf_analyzer, batch 256 (before and after the job runs)",
        "",
        "| when | concurrency | rows/s | p50 ms | p99 ms | stable |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in run["perf_analyzer"]:
        lines.append(
            f"| {r['when']} | {r['concurrency']} | {r['rows_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {'yes' if r['stable'] else 'no (last window kept)'} |"
        )
    lines += [
        "",
        f"Command: `{best['command']}` (with each concurrency).",
        "",
        "## The batch-scoring job",
        "",
        "| Triton calls in flight | rows | job s | rows/s | ÷ best perf_analyzer | peak RSS MiB | process s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for j in run["jobs"]:
        lines.append(
            f"| {j['in_flight']} | {j['rows']:,} | {j['job_s']:.1f} | {j['rows_per_s']:,.0f} "
            f"| {j['rows_per_s'] / best['rows_per_s']:.2f} | {j['peak_rss_mib']:.0f} | {j['process_s']:.1f} |"
        )
    fastest = max(run["jobs"], key=lambda j: j["rows_per_s"])
    ratio = fastest["rows_per_s"] / best["rows_per_s"]
    lines += [
        "",
        "`job s` is the job's own time from reading the input to publishing the output (its summary line); "
        "`process s` adds the interpreter's start and imports (Feast, pyarrow). Peak RSS is the job process' "
        "largest resident set, sampled every 50 ms: the interpreter with pyarrow and Feast, the input's "
        "row group being read (pyarrow decodes one whole) and two chunks of `BATCH_SCORING_CHUNK_ROWS` "
        "(65,536) rows being scored; the output goes to a local file as it is scored.",
        "",
        f"Command of the fastest: `{fastest['command']}`.",
        "",
        "## Target (issue 15)",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| job rows/s >= 0.8 x perf_analyzer's batch-256 rows/s (its best concurrency, same run) "
        f"| {fastest['rows_per_s']:,.0f} / {best['rows_per_s']:,.0f} = **{ratio:.2f}** "
        f"| {'**met**' if ratio >= TARGET else '**not met**'} |",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "batch_scoring.md")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[4, 8, 16], help="job settings to measure")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and state under benchmarks/results/tmp")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    perf_analyzer_binary()  # before minutes of start-up: it says how to install it
    started = time.monotonic()
    run: dict = {"command": command_line("benchmarks/batch_scoring/run.py"), "load_at_start": load_average()}
    with work_dir("batch-scoring-", keep=args.keep_work) as work, BenchPlatform.up(work) as platform:
        run |= {"model_name": platform.model_name, "model_version": platform.model_version}
        triton = TritonTarget(platform.model_name, platform.triton.grpc_url, platform.triton_home.env())
        run |= measure(platform.env, triton, args.rows, args.in_flight, work)
        run["took_s"] = time.monotonic() - started
        text = report(run)
    write_report(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
