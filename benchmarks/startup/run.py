"""Start-up benchmark: how long each Python process of the platform takes to be ready to work, with Feast
imported the platform's way (typeguard's checks left out, ``mlops_common.feast_runtime``) beside Feast
imported with them (as before), alternating in one run.

    .venv/bin/python benchmarks/startup/run.py --out benchmarks/results/startup.md

Each measurement is a fresh interpreter running what the process runs before its first request or row: a
BFF worker builds its app (``bff.__main__.worker_app``: the code uvicorn calls in each worker), batch scoring
and the trainer import their entry modules. The "checks on" variant imports Feast first, so the platform's
hook finds it imported and changes nothing. Wall time and CPU (user + system) of the child; medians.
No platform is started: this is the import and app-building cost that a pod's start or a job's start pays
before it connects to anything.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.stack import ROOT, command_line, machine_summary, write_report
from devstack.components import app_environment

# What each process runs before it can work.
PROCESSES = {
    "BFF worker (app built)": "import bff.__main__; bff.__main__.worker_app()",
    "batch scoring job": "import batch_scoring.__main__",
    "trainer": "import trainer.train",
}
VARIANTS = {
    "platform (Feast without typeguard's checks)": "",
    "Feast with typeguard's checks (before)": "import feast\n",
}


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float


def measure_once(code: str) -> Sample:
    """One fresh interpreter running ``code``: its wall time and the CPU it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        env=app_environment(),
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Sample(wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))


def measure(repeats: int, processes: dict[str, str] = PROCESSES) -> dict[tuple[str, str], list[Sample]]:
    """Every process in every variant ``repeats`` times, the variants alternating (the machine's load moves)."""
    samples: dict[tuple[str, str], list[Sample]] = {}
    measure_once("import numpy")  # the first interpreter also warms the page cache
    for _ in range(repeats):
        for process, code in processes.items():
            for variant, prefix in VARIANTS.items():
                samples.setdefault((process, variant), []).append(measure_once(prefix + code))
    return samples


def report(samples: dict[tuple[str, str], list[Sample]], repeats: int, took_s: float, command: str) -> str:
    machine = machine_summary()
    platform_variant, before_variant = VARIANTS
    lines = [
        "# Start-up benchmark",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `{command}` ({took_s:.0f} s)",
        f"- Machine: {machine['nproc']} CPUs (shared), {machine['cpu']}, Python {machine['python']}; "
        f"load average before: {machine['loadavg']}",
        f"- Each cell: median of {repeats} fresh interpreters, the two variants alternating; wall time from "
        "process start to exit, CPU = user + system of the child.",
        "",
        "| process | variant | wall s (median) | CPU s (median) |",
        "|---|---|---:|---:|",
    ]
    for (process, variant), runs in samples.items():
        wall = statistics.median(s.wall_s for s in runs)
        cpu = statistics.median(s.cpu_s for s in runs)
        lines.append(f"| {process} | {variant} | {wall:.2f} | {cpu:.2f} |")
    lines += ["", "| process | start-up saved (wall, median) | ratio before ÷ platform |", "|---|---:|---:|"]
    for process in dict.fromkeys(process for process, _ in samples):
        platform = statistics.median(s.wall_s for s in samples[process, platform_variant])
        before = statistics.median(s.wall_s for s in samples[process, before_variant])
        lines.append(f"| {process} | {before - platform:.2f} s | {before / platform:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.md")
    parser.add_argument("--repeats", type=int, default=5, help="interpreters per process and variant")
    args = parser.parse_args()
    started = time.monotonic()
    samples = measure(args.repeats)
    text = report(samples, args.repeats, time.monotonic() - started, command_line("benchmarks/startup/run.py"))
    write_report(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
