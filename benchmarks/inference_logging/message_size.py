"""Records per inference-log message, and what they cost, in one run. Fuller messages cost the BFF,
RabbitMQ and the log worker less per record; two settings decide how full they are, a third how much
waits for them in memory:

1. ``LOG_MESSAGE_MAX_RECORDS`` 500 (the default before) beside 2,000 (now), under ``/predict/batch`` of
   256 rows (wrk, concurrency 1, KServe v2 bodies): a request's block is never split, so with 500 each
   batch was a message of its own; with 2,000 up to seven share one.
2. ``LOG_PUBLISH_LINGER_S`` 0.05 (the default before) beside 0.25 (now), under ``/predict`` (wrk,
   concurrency 4): single predictions wait that long for company before their message is published.
3. ``LOG_BUFFER_SIZE`` 10,000 (the default before) beside 50,000 (now), under ``/predict/batch`` of 256
   rows at concurrency 2: while the broker's confirms lag, batches keep coming; what the buffer cannot hold
   goes to the spool as JSON lines, and is replayed, both at a cost in CPU that the records' blocks do not
   have.

    .venv/bin/python benchmarks/inference_logging/message_size.py --out benchmarks/results/inference_log_message_size.md

For each comparison two BFFs with logging on run side by side on the same Triton, RabbitMQ and log worker,
identical but for the setting; only one gets traffic at a time, the settings alternating in ABBA order.
Each phase is followed by a pause in which the log worker writes what it logged (its batch age is 5 s);
the CPU of the BFF that took the traffic, the log worker, RabbitMQ and SeaweedFS is counted over the phase
and its pause, and the records that BFF spooled (``bff_inference_log_records_total``). Reported per
setting, pooled over its phases. No target: it is why the defaults changed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.serving.run import Measured, measured, v2_form
from benchmarks.stack import (
    ROOT,
    BenchPlatform,
    Bff,
    command_line,
    feature_bodies,
    load_average,
    rabbitmq_pid,
    run_facts,
    work_dir,
    write_report,
)
from benchmarks.wrk import WrkResult, run_wrk

log = logging.getLogger("benchmarks.inference_log_message_size")
# The processes whose CPU is counted ("BFF": the one that took the phase's traffic).
PROCESSES = ("BFF", "log worker", "RabbitMQ", "SeaweedFS (S3)")


@dataclass(frozen=True)
class Comparison:
    setting: str  # the BFF's environment variable
    before: str
    now: str
    path: str
    concurrency: int
    rows: int  # per request
    bodies: Callable[[], list[object]]
    load_text: str


COMPARISONS = (
    Comparison(
        "LOG_MESSAGE_MAX_RECORDS",
        "500",
        "2000",
        "/predict/batch",
        1,
        256,
        lambda: [v2_form(feature_bodies(256, seed=8))],
        "`/predict/batch` of 256 rows (KServe v2 body), concurrency 1",
    ),
    Comparison(
        "LOG_PUBLISH_LINGER_S",
        "0.05",
        "0.25",
        "/predict",
        4,
        1,
        lambda: feature_bodies(1000),
        "`/predict` (all features in the body), concurrency 4",
    ),
    Comparison(
        "LOG_BUFFER_SIZE",
        "10000",
        "50000",
        "/predict/batch",
        2,
        256,
        lambda: [v2_form(feature_bodies(256, seed=8))],
        "`/predict/batch` of 256 rows (KServe v2 body), concurrency 2",
    ),
)


@dataclass(frozen=True)
class Phase(Measured):
    """A phase's load and the CPU seconds of each of PROCESSES over it and the pause after it, with the
    setting's value it ran under and the records its BFF enqueued and spooled meanwhile."""

    value: str
    enqueued: int
    spooled: int


def _records(metrics_url: str) -> dict[str, int]:
    """The BFF's inference-log records enqueued and spooled so far (``bff_inference_log_records_total``)."""
    return {
        outcome: int(BenchPlatform.metric(metrics_url, f'bff_inference_log_records_total{{outcome="{outcome}"}}'))
        for outcome in ("enqueued", "spooled")
    }


def alternate(
    comparison: Comparison,
    targets: dict[str, Bff],
    shared_pids: dict[str, int | None],
    rounds: int,
    duration_s: float,
    pause_s: float,
) -> list[Phase]:
    """ABBA over the comparison's two values: ``targets`` maps each to its BFF;
    ``shared_pids`` names the processes every phase shares (the log worker, RabbitMQ, SeaweedFS)."""
    bodies = comparison.bodies()
    order = [
        value
        for r in range(rounds)
        for value in ((comparison.before, comparison.now) if r % 2 == 0 else (comparison.now, comparison.before))
    ]
    phases = []
    for value in order:
        target = targets[value]
        records_before = _records(target.metrics_url)

        def load_then_pause(url: str = target.url) -> WrkResult:
            load = run_wrk(
                url + comparison.path,
                bodies,
                concurrency=comparison.concurrency,
                rows_per_request=comparison.rows,
                duration_s=duration_s,
            )
            time.sleep(pause_s)
            return load

        load = measured({"BFF": target.daemon.pid(), **shared_pids}, load_then_pause)
        records = {k: n - records_before[k] for k, n in _records(target.metrics_url).items()}
        phase = Phase(**vars(load), value=value, **records)
        phases.append(phase)
        log.info("%s=%s: %.0f req/s", comparison.setting, value, phase.load.requests_per_s)
    return phases


def section(comparison: Comparison, phases: list[Phase], rounds: int, duration_s: float) -> list[str]:
    lines = [
        f"## {comparison.setting}: {comparison.before} (before) beside {comparison.now} (now)",
        "",
        f"Load: wrk, {comparison.load_text}, {rounds} phases of {duration_s:g} s per setting in ABBA order.",
        "",
        f"| {comparison.setting} | requests | req/s | rows/s | p50 ms (median of phases) | p99 ms (median of "
        "phases) | records spooled | " + " | ".join(f"{name} CPU µs/request" for name in PROCESSES) + " |",
        "|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(PROCESSES),
    ]
    per_value = {}
    for value in (comparison.before, comparison.now):
        mine = [p for p in phases if p.value == value]
        requests = sum(p.load.requests for p in mine)
        seconds = sum(p.load.elapsed_s for p in mine)
        cpu_us = {name: sum(p.cpu_s[name] for p in mine) / max(1, requests) * 1e6 for name in PROCESSES}
        per_value[value] = (requests / seconds, cpu_us)
        enqueued, spooled = sum(p.enqueued for p in mine), sum(p.spooled for p in mine)
        lines.append(
            f"| {value} | {requests:,} | {requests / seconds:,.0f} | {requests * comparison.rows / seconds:,.0f} | "
            f"{statistics.median(p.load.p50_ms for p in mine):.2f} | "
            f"{statistics.median(p.load.p99_ms for p in mine):.2f} | "
            f"{spooled:,} of {enqueued:,} ({spooled / max(1, enqueued):.1%}) | "
            + " | ".join(f"{cpu_us[name]:,.1f}" for name in PROCESSES)
            + " |"
        )
    (old_rate, old_cpu), (new_rate, new_cpu) = (per_value[v] for v in (comparison.before, comparison.now))
    lines += [
        "",
        f"{comparison.now} ÷ {comparison.before}: throughput {new_rate / old_rate:.2f}; CPU per request: "
        + ", ".join(f"{name} {new_cpu[name] / old_cpu[name]:.2f}" for name in PROCESSES if old_cpu[name] > 0)
        + f"; all four {sum(new_cpu.values()) / sum(old_cpu.values()):.2f}.",
        "",
        "Per phase (req/s): " + "; ".join(f"{p.value}: {p.load.requests_per_s:,.0f}" for p in phases) + ".",
        "",
    ]
    return lines


def report(
    sections: list[list[str]], rounds: int, duration_s: float, took_s: float, command: str, load_at_start: str
) -> str:
    lines = [
        "# Records per inference-log message: what logging costs each process",
        "",
        *run_facts(command, took_s, load_at_start),
        "- Two BFFs with inference logging on (one worker each) per comparison, identical but for the setting; "
        "the log worker writing to the table, RabbitMQ and SeaweedFS, everything on the same cores. CPU: user + "
        "system (psutil) over each phase and the pause after it, in which the log worker writes what the phase "
        "logged; RabbitMQ is the machine's broker.",
        "",
    ]
    for part in sections:
        lines += part
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference_log_message_size.md")
    parser.add_argument("--rounds", type=int, default=4, help="phases per setting")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--pause", type=float, default=6.0, help="seconds after each phase (the log worker writes)")
    parser.add_argument("--keep-work", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = command_line("benchmarks/inference_logging/message_size.py")
    started = time.monotonic()
    load_at_start = load_average()
    sections = []
    with work_dir("log-message-size-", keep=args.keep_work) as work, BenchPlatform.up(work) as platform:
        worker = platform.start_log_worker()
        shared = {"log worker": worker.pid(), "RabbitMQ": rabbitmq_pid(), "SeaweedFS (S3)": platform.s3_pid}
        for comparison in COMPARISONS:
            targets = {}
            for value in (comparison.before, comparison.now):
                name = f"bff-{comparison.setting.lower()}-{value}"
                targets[value] = platform.start_bff(name, inference_logging=True, **{comparison.setting: value})
            phases = alternate(comparison, targets, shared, args.rounds, args.duration, args.pause)
            sections.append(section(comparison, phases, args.rounds, args.duration))
        text = report(sections, args.rounds, args.duration, time.monotonic() - started, command, load_at_start)
    write_report(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
