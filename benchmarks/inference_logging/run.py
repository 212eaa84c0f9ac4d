"""Inference-logging cost: BFF ``/predict`` with logging on (RabbitMQ + log worker) vs off, in one run.

    .venv/bin/python benchmarks/inference_logging/run.py --out benchmarks/results/inference_logging.md

Two BFFs run side by side on the same Triton, identical except ``INFERENCE_LOGGING_ENABLED``; only one
gets traffic at a time, from wrk. Both are warmed up first (a process's first seconds of load cost more
than the rest: the order would charge that to the first mode). Phases alternate on/off in an ABBA order
(on, off, off, on, on, off, ...) so slow drift of the shared machine hits both equally, with a pause
between phases long enough for the log worker to flush the previous phase (its batch age is 5 s). A
control follows: two more rounds with the log worker paused (SIGSTOP; RabbitMQ keeps the records, the worker
writes them once resumed), to tell what logging costs the BFF itself from what the worker's work beside it on
the same cores costs.
Target: logging costs <= 5 % of p99 latency and of throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.stack import (
    ROOT,
    BenchPlatform,
    command_line,
    cpu_seconds,
    feature_bodies,
    load_average,
    machine_summary,
    rabbitmq_pid,
    work_dir,
    write_report,
)
from benchmarks.wrk import WrkResult, run_wrk

log = logging.getLogger("benchmarks.inference_logging")


def pooled(results: list[WrkResult]) -> WrkResult:
    """The phases of one mode as one load: requests over their summed time; each percentile the median of
    the phases' (wrk reports percentiles, not the latencies)."""
    return WrkResult(
        label=results[0].label,
        concurrency=results[0].concurrency,
        rows_per_request=1,
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        elapsed_s=sum(r.elapsed_s for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p95_ms=statistics.median(r.p95_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
    )


# The processes whose CPU is accounted, in the report's order ("BFF": the one that took the phase's traffic).
PROCESSES = ("BFF", "log worker", "RabbitMQ", "SeaweedFS (S3)", "Triton")


@dataclass(frozen=True)
class Phase:
    logging_on: bool
    result: WrkResult
    # CPU seconds of each process (PROCESSES) from the phase's start to the next phase's start: the load
    # and the pause after it, in which the log worker writes what the phase logged.
    cpu_s: dict[str, float]

    def cpu_us_per_request(self, process: str) -> float:
        return self.cpu_s[process] / self.result.requests * 1e6 if self.result.requests else float("nan")


def alternate(
    urls: dict[bool, str],
    pids: dict[str, int | None],
    rounds: int,
    concurrency: int,
    duration_s: float,
    settle_s: float,
    warmup_s: float = 5.0,
) -> list[Phase]:
    """``pids``: "BFF on", "BFF off" and the shared processes of PROCESSES."""
    bodies = feature_bodies(1000)
    order = [logging_on for i in range(rounds) for logging_on in ((True, False) if i % 2 == 0 else (False, True))]

    def cpu_now(logging_on: bool) -> dict[str, float]:
        bff = pids["BFF on" if logging_on else "BFF off"]
        return {name: cpu_seconds(bff if name == "BFF" else pids[name]) for name in PROCESSES}

    if warmup_s > 0:
        for url in urls.values():
            run_wrk(f"{url}/predict", bodies, concurrency=concurrency, duration_s=warmup_s, warmup_s=0)
    phases: list[Phase] = []
    time.sleep(settle_s)
    for logging_on in order:
        started = cpu_now(logging_on)
        result = run_wrk(
            f"{urls[logging_on]}/predict",
            bodies,
            concurrency=concurrency,
            duration_s=duration_s,
            warmup_s=0,
            label="on" if logging_on else "off",
        )
        log.info(
            "logging %s: %.0f req/s p50 %.2f p99 %.2f ms",
            result.label,
            result.requests_per_s,
            result.p50_ms,
            result.p99_ms,
        )
        time.sleep(settle_s)
        ended = cpu_now(logging_on)
        phases.append(Phase(logging_on, result, {name: ended[name] - started[name] for name in PROCESSES}))
    return phases


@contextlib.contextmanager
def paused(pid: int | None) -> Iterator[None]:
    """The process stopped (SIGSTOP) for the block's duration, then resumed."""
    if pid is None:
        raise RuntimeError("the process to pause is not running")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@dataclass(frozen=True)
class Costs:
    """Phases pooled by mode: each mode's load, CPU µs per request of each process, and logging's costs in %."""

    on: WrkResult
    off: WrkResult
    cpu: dict[str, dict[str, float]]  # "on" / "off" -> process -> µs per request

    @classmethod
    def of(cls, phases: list[Phase]) -> Costs:
        groups = {mode: [p for p in phases if p.logging_on == (mode == "on")] for mode in ("on", "off")}
        pooled_results = {mode: pooled([p.result for p in group]) for mode, group in groups.items()}
        cpu = {
            mode: {name: sum(p.cpu_s[name] for p in group) / pooled_results[mode].requests * 1e6 for name in PROCESSES}
            for mode, group in groups.items()
        }
        return cls(pooled_results["on"], pooled_results["off"], cpu)

    @property
    def p99_pct(self) -> float:
        return (self.on.p99_ms - self.off.p99_ms) / self.off.p99_ms * 100

    @property
    def p50_pct(self) -> float:
        return (self.on.p50_ms - self.off.p50_ms) / self.off.p50_ms * 100

    @property
    def throughput_pct(self) -> float:
        return (self.off.requests_per_s - self.on.requests_per_s) / self.off.requests_per_s * 100

    @property
    def bff_cpu_us(self) -> float:
        return self.cpu["on"]["BFF"] - self.cpu["off"]["BFF"]


def phase_row(number: str, phase: Phase) -> str:
    """A row of the report's table of phases."""
    result = phase.result
    shared = sum(phase.cpu_us_per_request(name) for name in PROCESSES[1:4])
    return (
        f"| {number} | {result.label} | {result.requests_per_s:,.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} "
        f"| {phase.cpu_us_per_request('BFF'):.0f} | {shared:.0f} |"
    )


def report(
    command,
    platform,
    phases: list[Phase],
    control: list[Phase],
    concurrency,
    duration_s,
    delivered: dict[str, float],
    took_s: float,
    load_at_start: str,
) -> str:
    machine = machine_summary()
    costs, paused_costs = Costs.of(phases), Costs.of(control)
    on, off, cpu = costs.on, costs.off, costs.cpu
    bff_cpu_off, bff_cpu_on = cpu["off"]["BFF"], cpu["on"]["BFF"]
    bff_cpu_cost = costs.bff_cpu_us / bff_cpu_off * 100
    total = {mode: sum(cpu[mode].values()) for mode in cpu}
    logging_cpu = total["on"] - total["off"]
    spread = {
        label: (min(p.result.requests_per_s for p in group), max(p.result.requests_per_s for p in group))
        for label, group in (
            ("off", [p for p in phases if not p.logging_on]),
            ("on", [p for p in phases if p.logging_on]),
        )
    }
    p99_cost, tput_cost, p50_cost = costs.p99_pct, costs.throughput_pct, costs.p50_pct
    ok = {True: "**met**", False: "**not met**"}
    lines = [
        "# Inference-logging cost",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        f"- Command: `{command}` (whole run up to the report, platform start included: {took_s:.0f} s)",
        f"- Machine: {machine['nproc']} CPUs (`nproc`; shared cores, not dedicated), {machine['cpu']}, "
        f"Python {machine['python']}, no GPU. Load generator, both BFFs, Triton, RabbitMQ, the log worker and "
        "SeaweedFS all share these cores: the log worker's CPU is charged to the logging-on phases here, "
        "whereas in the cluster it runs in a pod of its own. Load average (1/5/15 min) before the run: "
        f"{load_at_start}; after measuring: {machine['loadavg']}.",
        f"- Model: Triton `{platform.model_name}` v{platform.model_version} (Python backend), champion trained in this "
        "run on synthetic data",
        f"- Load: wrk (`-t1`, closed loop), `/predict` with all features in the body, concurrency {concurrency}, "
        f"each BFF warmed up first, then {len(phases)} phases of {duration_s:.0f} s alternating on/off in ABBA "
        "order; per mode, requests/s over the phases' summed time and each percentile the median of the phases'",
        "",
        "## Result",
        "",
        "| logging | requests | errors | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r.label} | {r.requests:,} | {r.errors} | {r.requests_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |"
            for r in (off, on)
        ),
        "",
        "| target | cost of logging | result |",
        "|---|---:|---|",
        f"| p99 latency +<= 5 % | {p99_cost:+.1f} % | {ok[p99_cost <= 5]} |",
        f"| throughput -<= 5 % | {tput_cost:+.1f} % | {ok[tput_cost <= 5]} |",
        f"| (p50 latency, for reference) | {p50_cost:+.1f} % | |",
        f"| (BFF CPU per request: {bff_cpu_off:.0f} us off, {bff_cpu_on:.0f} us on) | {bff_cpu_cost:+.1f} % | |",
        "",
        f"Noise: per-phase throughput ranged {spread['off'][0]:,.0f}-{spread['off'][1]:,.0f} req/s with logging off "
        f"and {spread['on'][0]:,.0f}-{spread['on'][1]:,.0f} req/s with it on. The BFF's CPU time per request "
        "(user + system time of the BFF process and its workers, psutil: other tenants' CPU does not count, "
        "though CPU steal and cache contention still move it) is the closest measure of what logging costs the "
        "BFF itself.",
        "",
        "## Where logging's CPU goes",
        "",
        "CPU time of each process per request (user + system, psutil; the process and its children), from each "
        "phase's start to the next one's, so that the pause after an on phase, in which the log worker writes "
        "what it logged, counts with it; pooled by mode. In the off phases the log worker, RabbitMQ and "
        "SeaweedFS idle (RabbitMQ is the machine's broker: other vhosts' traffic, if any, would show too).",
        "",
        "| process | logging off µs/request | logging on µs/request | on - off |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {cpu['off'][name]:.1f} | {cpu['on'][name]:.1f} | {cpu['on'][name] - cpu['off'][name]:+.1f} |"
            for name in PROCESSES
        ),
        f"| all of them | {total['off']:.1f} | {total['on']:.1f} | {logging_cpu:+.1f} "
        f"({logging_cpu / total['off'] * 100:+.1f} %) |",
        "",
        "## Control: the log worker paused",
        "",
        f"{len(control)} more phases in the same order with the log worker stopped (SIGSTOP; RabbitMQ kept the "
        "records and the worker wrote them once resumed), so that neither it nor S3 worked beside the BFF: what "
        "is left of logging's cost is the BFF's own (building and publishing the records) and RabbitMQ's.",
        "",
        "| log worker | throughput cost | p99 cost | BFF CPU per request, on - off |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {c.throughput_pct:+.1f} % | {c.p99_pct:+.1f} % | {c.bff_cpu_us:+.1f} us "
            f"({c.cpu['off']['BFF']:.0f} -> {c.cpu['on']['BFF']:.0f}) |"
            for label, c in (("running (above)", costs), ("paused", paused_costs))
        ),
        "",
        "## Phases",
        "",
        "| # | logging | req/s | p50 ms | p99 ms | BFF CPU us/request | log worker + RabbitMQ + S3 CPU us/request |",
        "|---:|---|---:|---:|---:|---:|---:|",
        *(phase_row(str(i + 1), p) for i, p in enumerate(phases)),
        *(phase_row(f"{len(phases) + i + 1} (worker paused)", p) for i, p in enumerate(control)),
        "",
        "## Were the records delivered?",
        "",
        f"- BFF (logging on): {delivered['enqueued']:,.0f} records enqueued, {delivered['confirmed']:,.0f} "
        f"confirmed by RabbitMQ, {delivered['spooled']:,.0f} spooled to disk, {delivered['dropped']:,.0f} dropped",
        f"- Log worker: {delivered['written']:,.0f} records written to S3 (Parquet) by the end of the run",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference_logging.md")
    parser.add_argument("--rounds", type=int, default=4, help="on/off pairs")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--settle", type=float, default=6.0, help="pause before each phase")
    parser.add_argument("--keep-work", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = command_line("benchmarks/inference_logging/run.py")
    started = time.monotonic()
    load_at_start = load_average()
    with work_dir("inference-logging-", keep=args.keep_work) as work, BenchPlatform.up(work) as platform:
        worker = platform.start_log_worker()
        bff_on = platform.start_bff("bff-logging-on", inference_logging=True)
        bff_off = platform.start_bff("bff-logging-off", inference_logging=False)
        pids = {
            "BFF on": bff_on.daemon.pid(),
            "BFF off": bff_off.daemon.pid(),
            "log worker": worker.pid(),
            "RabbitMQ": rabbitmq_pid(),
            "SeaweedFS (S3)": platform.s3_pid,
            "Triton": platform.triton.daemon.pid(),
        }
        urls = {True: bff_on.url, False: bff_off.url}
        phases = alternate(urls, pids, args.rounds, args.concurrency, args.duration, args.settle)
        # Short pauses: nothing to flush, and the paused worker misses its heartbeats to RabbitMQ (60 s).
        with paused(pids["log worker"]):
            control = alternate(urls, pids, 2, args.concurrency, args.duration, settle_s=1.0, warmup_s=0)
        took = time.monotonic() - started
        enqueued = platform.metric(bff_on.metrics_url, 'bff_inference_log_records_total{outcome="enqueued"}')
        written = 0.0
        worker_metrics = f"http://127.0.0.1:{platform.env['LOG_WORKER_METRICS_PORT']}/metrics"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            written = platform.metric(worker_metrics, "log_worker_records_written_total")
            if written >= enqueued:
                break
            time.sleep(1)
        delivered = {
            outcome: platform.metric(bff_on.metrics_url, f'bff_inference_log_records_total{{outcome="{outcome}"}}')
            for outcome in ("enqueued", "confirmed", "spooled", "dropped")
        }
        delivered["written"] = written
        text = report(
            command, platform, phases, control, args.concurrency, args.duration, delivered, took, load_at_start
        )
    write_report(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
