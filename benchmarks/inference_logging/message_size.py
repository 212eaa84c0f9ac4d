"""Records per inference-log message: the BFF's CPU per ``/predict/batch`` (256 rows, logging on) with
``LOG_MESSAGE_MAX_RECORDS`` 100 (the default before) beside 500 (the default now), in one run.

    .venv/bin/python benchmarks/inference_logging/message_size.py --out benchmarks/results/inference_log_message_size.md

Two BFFs with logging on run side by side on the same Triton, RabbitMQ and log worker, identical but for
``LOG_MESSAGE_MAX_RECORDS``; only one gets traffic at a time, the settings alternating in ABBA order
(wrk, concurrency 1, KServe v2 bodies of 256 rows). Reported per setting, pooled over its phases: requests/s,
p50/p99 of the medians of the phases, and the CPU per request of the BFF that took the traffic. No target:
it is why the default changed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.serving.run import v2_form
from benchmarks.stack import (
    ROOT,
    BenchPlatform,
    command_line,
    cpu_seconds,
    feature_bodies,
    load_average,
    machine_summary,
    work_dir,
    write_report,
)
from benchmarks.wrk import WrkResult, run_wrk

log = logging.getLogger("benchmarks.inference_log_message_size")
ROWS = 256
SETTINGS = (100, 500)


@dataclass(frozen=True)
class Phase:
    max_records: int
    load: WrkResult
    bff_cpu_s: float

    @property
    def cpu_ms_per_request(self) -> float:
        return self.bff_cpu_s / max(1, self.load.requests) * 1000


def alternate(targets: dict[int, tuple[str, int | None]], rounds: int, duration_s: float) -> list[Phase]:
    """ABBA over the settings: ``targets`` maps each to its BFF's URL and process id."""
    body = v2_form(feature_bodies(ROWS, seed=8))
    first, second = targets
    order = [s for r in range(rounds) for s in ((first, second) if r % 2 == 0 else (second, first))]
    phases = []
    for max_records in order:
        url, pid = targets[max_records]
        before = cpu_seconds(pid)
        load = run_wrk(f"{url}/predict/batch", [body], concurrency=1, rows_per_request=ROWS, duration_s=duration_s)
        phases.append(Phase(max_records, load, cpu_seconds(pid) - before))
        log.info("LOG_MESSAGE_MAX_RECORDS=%d: %.0f req/s", max_records, load.requests_per_s)
    return phases


def report(phases: list[Phase], rounds: int, duration_s: float, took_s: float, command: str, load_at_start: str) -> str:
    machine = machine_summary()
    lines = [
        "# Records per inference-log message: the BFF's cost of logging a 256-row batch",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `{command}` ({took_s:.0f} s, platform start included)",
        f"- Machine: {machine['nproc']} CPUs (shared), {machine['cpu']}, Python {machine['python']}; load average "
        f"before: {load_at_start}, after: {load_average()}",
        f"- Load: wrk, concurrency 1, `/predict/batch` of {ROWS} rows (KServe v2 body), {rounds} phases of "
        f"{duration_s:g} s per setting in ABBA order; two BFFs with inference logging on (one worker each), the "
        "log worker writing to the table, everything on the same cores.",
        "",
        "| LOG_MESSAGE_MAX_RECORDS | requests | req/s | rows/s | p50 ms (median of phases) | p99 ms (median of "
        "phases) | BFF CPU ms/request |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    per_setting = {}
    for max_records in dict.fromkeys(p.max_records for p in phases):
        mine = [p for p in phases if p.max_records == max_records]
        requests = sum(p.load.requests for p in mine)
        seconds = sum(p.load.elapsed_s for p in mine)
        cpu_ms = sum(p.bff_cpu_s for p in mine) / max(1, requests) * 1000
        per_setting[max_records] = (requests / seconds, cpu_ms)
        lines.append(
            f"| {max_records} | {requests:,} | {requests / seconds:,.0f} | {requests * ROWS / seconds:,.0f} | "
            f"{statistics.median(p.load.p50_ms for p in mine):.2f} | "
            f"{statistics.median(p.load.p99_ms for p in mine):.2f} | {cpu_ms:.3f} |"
        )
    (old_rate, old_cpu), (new_rate, new_cpu) = (per_setting[s] for s in SETTINGS)
    lines += [
        "",
        f"{SETTINGS[1]} ÷ {SETTINGS[0]}: throughput {new_rate / old_rate:.2f}, BFF CPU per request "
        f"{new_cpu / old_cpu:.2f}.",
        "",
        "Per phase: " + "; ".join(f"{p.max_records}: {p.cpu_ms_per_request:.2f} ms" for p in phases) + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference_log_message_size.md")
    parser.add_argument("--rounds", type=int, default=4, help="phases per setting")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--keep-work", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = command_line("benchmarks/inference_logging/message_size.py")
    started = time.monotonic()
    load_at_start = load_average()
    with work_dir("log-message-size-", keep=args.keep_work) as work, BenchPlatform.up(work) as platform:
        platform.start_log_worker()
        targets = {}
        for max_records in SETTINGS:
            bff = platform.start_bff(
                f"bff-{max_records}", inference_logging=True, LOG_MESSAGE_MAX_RECORDS=str(max_records)
            )
            targets[max_records] = (bff.url, bff.daemon.pid())
        phases = alternate(targets, args.rounds, args.duration)
        text = report(phases, args.rounds, args.duration, time.monotonic() - started, command, load_at_start)
    write_report(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
