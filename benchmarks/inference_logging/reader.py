"""The log worker's reading of one inference-log message into table rows: the fast reader
(``log_worker.fast_reader``, msgspec, no model per record) beside the record model (``InferenceLogRecord``,
pydantic, what every message went through before and what a message with a bad line still goes through).

    .venv/bin/python benchmarks/inference_logging/reader.py --out benchmarks/results/log_worker_reader.md

In-process, no server: messages of 1, 50, 256 and 500 records as the BFF writes them (``encode_records``:
ten features, some missing, the online store's features on some rows), the two readers taking turns in
``--rounds`` rounds of ``--repeats`` reads each; medians of the rounds. Both must give the same rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.stack import ROOT, command_line, machine_summary, write_report
from bff.inference_log import encode_records
from log_worker.fast_reader import lines_to_table
from log_worker.worker import parse_lines_with_model
from mlops_common.features import FEATURE_NAMES
from mlops_common.rollout import Role

SIZES = (1, 50, 256, 500)


def bff_lines(n: int, seed: int = 11) -> list[bytes]:
    """``n`` records as the BFF's request path serialises them."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    matrix[rng.random(matrix.shape) < 0.1] = np.nan
    return encode_records(
        request_ids=[f"{rng.bytes(16).hex()}-{i}" for i in range(n)],
        timestamp=datetime.now(UTC),
        entity_ids=[100000 + i if i % 4 == 0 else None for i in range(n)],
        features=matrix,
        store_features=[list(FEATURE_NAMES[5:]) if i % 4 == 0 else [] for i in range(n)],
        model_name="credit_default",
        model_versions=["3"] * n,
        probabilities=rng.random(n).tolist(),
        decisions=["approve" if p < 0.5 else "review" for p in rng.random(n)],
        latency_ms=2.5,
        roles=[Role.CHAMPION] * n,
    )


@dataclass(frozen=True)
class Reading:
    records: int
    fast_ms: float
    model_ms: float


def _seconds(read, lines: list[bytes], repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        read(lines)
    return (time.perf_counter() - started) / repeats


def measure(sizes: tuple[int, ...], rounds: int, repeats: int) -> list[Reading]:
    readings = []
    for n in sizes:
        lines = bff_lines(n)
        fast_rows, model_rows = lines_to_table(lines), parse_lines_with_model(lines).rows
        if fast_rows is None or repr(fast_rows.to_pylist()) != repr(model_rows.to_pylist()):
            raise AssertionError(f"the two readers disagree on a message of {n} records")
        fast, model = [], []
        for _ in range(rounds):
            fast.append(_seconds(lines_to_table, lines, repeats))
            model.append(_seconds(parse_lines_with_model, lines, repeats))
        readings.append(Reading(n, statistics.median(fast) * 1000, statistics.median(model) * 1000))
    return readings


def report(readings: list[Reading], rounds: int, repeats: int, took_s: float, command: str) -> str:
    machine = machine_summary()
    lines = [
        "# The log worker's reading of a message: fast reader beside the record model",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `{command}` ({took_s:.0f} s)",
        f"- Machine: {machine['nproc']} CPUs (shared), {machine['cpu']}, Python {machine['python']}; load average "
        f"after: {machine['loadavg']}",
        f"- In-process: messages as the BFF writes them, the readers taking turns in {rounds} rounds of "
        f"{repeats} reads; medians of the rounds. Both gave the same rows for every message.",
        "",
        "| records per message | fast reader ms | record model ms | fast reader µs/record | record model "
        "µs/record | model ÷ fast |",
        "|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.records:,} | {r.fast_ms:.3f} | {r.model_ms:.3f} | {r.fast_ms / r.records * 1000:.1f} "
            f"| {r.model_ms / r.records * 1000:.1f} | {r.model_ms / r.fast_ms:.1f} |"
            for r in readings
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "log_worker_reader.md")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20, help="reads per reader and round")
    args = parser.parse_args()
    started = time.monotonic()
    readings = measure(SIZES, args.rounds, args.repeats)
    command = command_line("benchmarks/inference_logging/reader.py")
    text = report(readings, args.rounds, args.repeats, time.monotonic() - started, command)
    write_report(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
