"""The log worker's reading of one inference-log message into table rows, by message form: a message of
blocks as the BFF publishes it (``log_worker.fast_reader.blocks_to_table``, columns read whole), the same
records as JSON lines read by the fast reader (``lines_to_table``, msgspec; what the BFF's spool replays
and the dead-letter queue holds), and by the record model (``InferenceLogRecord``, pydantic, what a
message with a bad record goes through).

    .venv/bin/python benchmarks/inference_logging/reader.py --out benchmarks/results/log_worker_reader.md

In-process, no server: messages of 1, 50, 256 and 500 records (ten features, some missing, the online
store's features on some rows; the blocks of single predictions joined as the publisher joins them), the
readers taking turns in ``--rounds`` rounds of ``--repeats`` reads each, each read from the message's
bytes (``parse_message``, as on arrival); medians of the rounds. All three must give the same rows.
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
from log_worker.worker import parse_lines_with_model, parse_message
from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import MESSAGE_CONTENT_TYPE, encode_message
from mlops_common.inference_log_wire import (
    BLOCKS_CONTENT_TYPE,
    WireBlock,
    encode_blocks_message,
    extend_block,
    log_block,
    message_lines,
    open_block,
)
from mlops_common.rollout import Role

SIZES = (1, 50, 256, 500)


def bff_message(n: int, seed: int = 11) -> bytes:
    """A message of ``n`` records as the BFF publishes them: single predictions' blocks, gathered into one as
    the publisher's buffer gathers them."""
    rng = np.random.default_rng(seed)
    message: WireBlock | None = None
    for i in range(n):
        matrix = rng.normal(size=(1, len(FEATURE_NAMES))).astype(np.float32)
        matrix[rng.random(matrix.shape) < 0.1] = np.nan
        stored = i % 4 == 0
        block = log_block(
            request_ids=[rng.bytes(16).hex()],
            timestamp=datetime.now(UTC),
            entity_ids=[100000 + i if stored else None],
            features=matrix,
            store_features=[list(FEATURE_NAMES[5:]) if stored else []],
            model_name="credit_default",
            model_versions=["3"],
            probabilities=rng.random(1).astype(np.float32),
            decisions=["approve" if rng.random() < 0.5 else "review"],
            latency_ms=float(rng.uniform(1, 5)),
            roles=[Role.CHAMPION],
        )
        if message is None:
            message = open_block(block)
        else:
            extend_block(message, block)
    assert message is not None
    return encode_blocks_message([message])


@dataclass(frozen=True)
class Reading:
    records: int
    blocks_bytes: int
    lines_bytes: int
    blocks_ms: float
    lines_ms: float
    model_ms: float


def _seconds(read, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        read()
    return (time.perf_counter() - started) / repeats


def _same(a, b) -> bool:
    return repr(a.to_pylist()) == repr(b.to_pylist())


def measure(sizes: tuple[int, ...], rounds: int, repeats: int) -> list[Reading]:
    readings = []
    for n in sizes:
        blocks_body = bff_message(n)
        lines = message_lines(blocks_body, BLOCKS_CONTENT_TYPE)
        lines_body = encode_message(lines)
        readers = {
            "blocks": lambda body=blocks_body: parse_message(body, BLOCKS_CONTENT_TYPE),
            "lines": lambda body=lines_body: parse_message(body, MESSAGE_CONTENT_TYPE),
            "model": lambda lines=lines: parse_lines_with_model(lines),
        }
        rows = {name: read() for name, read in readers.items()}
        if any(parsed.rejects for parsed in rows.values()) or not (
            _same(rows["blocks"].rows, rows["lines"].rows) and _same(rows["lines"].rows, rows["model"].rows)
        ):
            raise AssertionError(f"the readers disagree on a message of {n} records")
        times: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(rounds):
            for name, read in readers.items():
                times[name].append(_seconds(read, repeats))
        ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
        readings.append(Reading(n, len(blocks_body), len(lines_body), ms["blocks"], ms["lines"], ms["model"]))
    return readings


def report(readings: list[Reading], rounds: int, repeats: int, took_s: float, command: str) -> str:
    machine = machine_summary()
    lines = [
        "# The log worker's reading of a message: blocks beside JSON lines (fast reader, record model)",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `{command}` ({took_s:.0f} s)",
        f"- Machine: {machine['nproc']} CPUs (shared), {machine['cpu']}, Python {machine['python']}; load average "
        f"after: {machine['loadavg']}",
        f"- In-process: each message read from its bytes as the worker reads it on arrival, the three readers "
        f"taking turns in {rounds} rounds of {repeats} reads; medians of the rounds. All three gave the same "
        "rows for every message.",
        "",
        "| records per message | blocks KB | JSON lines KB | blocks ms | JSON lines, fast reader ms | JSON lines, "
        "record model ms | blocks µs/record | fast reader µs/record | record model µs/record | fast reader ÷ "
        "blocks | record model ÷ blocks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.records:,} | {r.blocks_bytes / 1024:.1f} | {r.lines_bytes / 1024:.1f} | {r.blocks_ms:.3f} "
            f"| {r.lines_ms:.3f} | {r.model_ms:.3f} | {r.blocks_ms / r.records * 1000:.1f} "
            f"| {r.lines_ms / r.records * 1000:.1f} | {r.model_ms / r.records * 1000:.1f} "
            f"| {r.lines_ms / r.blocks_ms:.1f} | {r.model_ms / r.blocks_ms:.1f} |"
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
