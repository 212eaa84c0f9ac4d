"""The shortlisted configurations measured again in one run: one tritonserver serving each of them as a
model of its own, perf_analyzer on each in turn, in rounds that alternate the order so drift on the shared
machine falls on all of them alike. Model Analyzer measured them minutes apart, in 1 s windows."""

from __future__ import annotations

import csv
import shlex
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from google.protobuf import text_format

from benchmarks.model_analyzer.results import Candidate, Measurement
from devstack.components import start_triton
from devstack.processes import free_port
from devstack.triton_home import TritonHome
from mlops_common.triton_config import parse_config


@dataclass(frozen=True)
class RoundSettings:
    rounds: int
    measurement_interval_ms: int


@dataclass
class SideBySide:
    candidate: Candidate
    runs: list[Measurement] = field(default_factory=list)

    def at(self, concurrency: int) -> list[Measurement]:
        return [run for run in self.runs if run.concurrency == concurrency]

    def throughput(self, concurrency: int) -> float:
        return statistics.fmean(run.throughput for run in self.at(concurrency))

    def worst_p99_ms(self, concurrency: int) -> float:
        return max(run.p99_ms for run in self.at(concurrency))


def measure_side_by_side(
    candidates: list[Candidate],
    version_dir: Path,
    work: Path,
    home: TritonHome,
    perf_analyzer: Path,
    settings: RoundSettings,
    concurrencies: list[int],
) -> tuple[list[SideBySide], str]:
    """Each candidate at each of ``concurrencies`` (batch-1 requests) for ``settings.rounds`` rounds; also
    returns the perf_analyzer command line (one candidate's) for the report."""
    repository = work / "model_repository"
    for candidate in candidates:
        model_dir = repository / candidate.variant
        shutil.copytree(version_dir, model_dir / "1", ignore=shutil.ignore_patterns("__pycache__"))
        config = parse_config(candidate.config_text)
        config.name = candidate.variant
        (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    server = start_triton(
        repository,
        free_port(),
        free_port(),
        free_port(),
        work / "triton.log",
        home_dir=home.home,
        triton_venv=home.venv.root,
        load_models=[c.variant for c in candidates],
        die_with_parent=True,
        timeout_s=120,
    )
    results = [SideBySide(c) for c in candidates]
    try:
        wait_until_ready(server.base_url, [c.variant for c in candidates])
        for round_number in range(settings.rounds):
            order = results if round_number % 2 == 0 else results[::-1]
            for result in order:
                for concurrency in concurrencies:
                    measurement, command = perf_analyzer_run(
                        perf_analyzer, home, server.grpc_url, result.candidate.variant, concurrency, settings, work
                    )
                    result.runs.append(measurement)
    finally:
        server.stop()
    return results, command


def wait_until_ready(base_url: str, models: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=5) as client:
        for model in models:
            while client.get(f"/v2/models/{model}/ready").status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Triton did not load {model} within {timeout_s:.0f} s")
                time.sleep(0.2)


def perf_analyzer_run(
    perf_analyzer: Path,
    home: TritonHome,
    grpc_url: str,
    model: str,
    concurrency: int,
    settings: RoundSettings,
    work: Path,
) -> tuple[Measurement, str]:
    out = work / f"{model}-c{concurrency}.csv"
    out.unlink(missing_ok=True)
    argv = [
        str(perf_analyzer),
        *("-m", model, "-u", grpc_url, "-i", "grpc", "-b", "1", "--concurrency-range", str(concurrency)),
        *("--measurement-mode", "time_windows", "--measurement-interval", str(settings.measurement_interval_ms)),
        # Three windows, their mean reported however far apart they are: the rounds, not perf_analyzer's
        # stability check, are what evens out the shared machine's noise (a window that never settles
        # would leave no result at all).
        *("--stability-percentage", "999", "--max-trials", "3"),
        *("-f", str(out)),
    ]
    # perf_analyzer needs the server's library path (libb64 shim, CUDA runtime stubs).
    result = subprocess.run(argv, env=home.env(), capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"perf_analyzer on {model} exited {result.returncode}: {result.stdout[-800:]}")
    with out.open() as handle:
        row = next(csv.DictReader(handle))
    measurement = Measurement(model, concurrency, float(row["Inferences/Second"]), float(row["p99 latency"]) / 1000)
    command = shlex.join(["perf_analyzer", *argv[1:-2]]).replace(grpc_url, "<server>").replace(model, "<config>")
    command = command.replace(f"--concurrency-range {concurrency}", "--concurrency-range <concurrency>")
    return measurement, command


def pick_golden(results: list[SideBySide], concurrency: int, budget_ms: float) -> SideBySide | None:
    """The fastest configuration with dynamic batching at ``concurrency`` whose p99 stayed within the budget
    in every round."""
    within = [r for r in results if r.candidate.dynamic_batching and r.worst_p99_ms(concurrency) <= budget_ms]
    return max(within, key=lambda r: r.throughput(concurrency), default=None)
