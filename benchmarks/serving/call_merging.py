"""Merging concurrent Triton calls while a BFF worker is busy (``TRITON_MERGE_MIN_IN_FLIGHT``,
``services/bff/batching.py``) in one run: BFFs identical but for the setting, side by side on the same
Triton, under ``/predict`` at several concurrencies.

    .venv/bin/python benchmarks/serving/call_merging.py --out benchmarks/results/serving_call_merging.md

0 is the BFF before: every call its own Triton request (Triton's dynamic batcher merges them after each
has paid for its HTTP request and its trip to the Python backend). With N, a worker with N or more
requests in flight has one Triton request per version under way at a time; the calls that come meanwhile
wait for its answer and go together (1: whenever a call is under way). One BFF worker each, inference
logging on (the log worker writing to the table), all features in the body; only one BFF gets traffic at a
time, the settings in turn, the order reversed every round. Per setting and concurrency: requests/s,
p50/p99, the CPU per request of the BFF and of Triton, and the rows per Triton request
(``bff_triton_request_rows``). No target: it is why the default is what it is.
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

from benchmarks.serving.run import Measured, measured
from benchmarks.stack import (
    ROOT,
    BenchPlatform,
    Bff,
    command_line,
    feature_bodies,
    load_average,
    run_facts,
    work_dir,
    write_report,
)
from benchmarks.wrk import run_wrk

log = logging.getLogger("benchmarks.call_merging")
SETTING = "TRITON_MERGE_MIN_IN_FLIGHT"
BEFORE = "0"
VALUES = (BEFORE, "1", "4", "5", "6", "8")
CONCURRENCIES = (1, 4, 8, 16)


@dataclass(frozen=True)
class Phase(Measured):
    """One setting under one concurrency: the load, the CPU of the BFF and Triton, and the Triton requests
    the BFF sent meanwhile and their rows."""

    value: str
    triton_requests: int
    triton_rows: int


def _triton_requests(metrics_url: str) -> tuple[int, int]:
    return (
        int(BenchPlatform.metric(metrics_url, "bff_triton_request_rows_count")),
        int(BenchPlatform.metric(metrics_url, "bff_triton_request_rows_sum")),
    )


def alternate(
    targets: dict[str, Bff], triton_pid: int | None, rounds: int, duration_s: float, *, warmup_s: float = 1.0
) -> list[Phase]:
    """Every concurrency under each setting of ``targets`` (value -> its BFF) in turn, the settings' order
    reversed every other round."""
    bodies = feature_bodies(1000)
    phases = []
    for r in range(rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for concurrency in CONCURRENCIES:
            for value in order:
                target = targets[value]
                url = f"{target.url}/predict"
                if warmup_s > 0:
                    run_wrk(url, bodies, concurrency=concurrency, duration_s=warmup_s, warmup_s=0)
                requests_before, rows_before = _triton_requests(target.metrics_url)
                load = measured(
                    {"BFF": target.daemon.pid(), "Triton": triton_pid},
                    lambda url=url, concurrency=concurrency: run_wrk(
                        url, bodies, concurrency=concurrency, duration_s=duration_s, warmup_s=0
                    ),
                )
                requests_after, rows_after = _triton_requests(target.metrics_url)
                phases.append(
                    Phase(
                        **vars(load),
                        value=value,
                        triton_requests=requests_after - requests_before,
                        triton_rows=rows_after - rows_before,
                    )
                )
                log.info("%s=%s c=%d: %.0f req/s", SETTING, value, concurrency, load.load.requests_per_s)
    return phases


def _pooled(phases: list[Phase]) -> dict[str, float]:
    requests = sum(p.load.requests for p in phases)
    return {
        "requests": requests,
        "rate": requests / sum(p.load.elapsed_s for p in phases),
        "p50": statistics.median(p.load.p50_ms for p in phases),
        "p99": statistics.median(p.load.p99_ms for p in phases),
        "bff_us": sum(p.cpu_s["BFF"] for p in phases) / max(1, requests) * 1e6,
        "triton_us": sum(p.cpu_s["Triton"] for p in phases) / max(1, requests) * 1e6,
        "rows_per_triton_request": sum(p.triton_rows for p in phases) / max(1, sum(p.triton_requests for p in phases)),
    }


def report(phases: list[Phase], rounds: int, duration_s: float, took_s: float, command: str, load_at_start: str) -> str:
    values = list(dict.fromkeys(p.value for p in phases))
    lines = [
        "# Merging concurrent Triton calls in the BFF",
        "",
        *run_facts(command, took_s, load_at_start),
        f"- BFFs identical but for `{SETTING}` ({', '.join(values)}; {BEFORE}: every call its own Triton request; 1: "
        "calls wait whenever one of their version is under way), "
        "one worker each, inference logging on, the log worker writing to the table; the same Triton (Python "
        "backend, dynamic batching); wrk, `/predict` with all features in the body, everything on the same cores.",
        f"- {rounds} phases of {duration_s:g} s per setting and concurrency (each after a 1 s warm-up), the settings "
        "in turn, their order reversed every round; pooled per setting. CPU: user + system (psutil) of the BFF "
        "and of Triton (server and Python-backend stub) per request.",
        "",
        f"| concurrency | {SETTING} | requests | req/s | ÷ {BEFORE} | p50 ms | p99 ms | rows per Triton request | "
        "BFF CPU µs/request | Triton CPU µs/request |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency in sorted({p.load.concurrency for p in phases}):
        pooled = {
            value: _pooled([p for p in phases if p.value == value and p.load.concurrency == concurrency])
            for value in values
        }
        for value, m in pooled.items():
            lines.append(
                f"| {concurrency} | {value} | {m['requests']:,} | {m['rate']:,.0f} | "
                f"{m['rate'] / pooled[BEFORE]['rate']:.2f} | {m['p50']:.2f} | {m['p99']:.2f} | "
                f"{m['rows_per_triton_request']:.2f} | {m['bff_us']:,.0f} | {m['triton_us']:,.0f} |"
            )
    lines += [
        "",
        "Per phase (req/s): "
        + "; ".join(f"c={p.load.concurrency} {p.value}: {p.load.requests_per_s:,.0f}" for p in phases)
        + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving_call_merging.md")
    parser.add_argument("--rounds", type=int, default=2, help="phases per setting and concurrency")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--keep-work", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = command_line("benchmarks/serving/call_merging.py")
    started = time.monotonic()
    load_at_start = load_average()
    with work_dir("call-merging-", keep=args.keep_work) as work, BenchPlatform.up(work) as platform:
        platform.start_log_worker()
        targets = {
            value: platform.start_bff(f"bff-merge-{value}", inference_logging=True, **{SETTING: value})
            for value in VALUES
        }
        phases = alternate(targets, platform.triton.daemon.pid(), args.rounds, args.duration)
        text = report(phases, args.rounds, args.duration, time.monotonic() - started, command, load_at_start)
    write_report(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
