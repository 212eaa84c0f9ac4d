"""HTTP load with wrk (Debian's package; `make bench-tools` installs it): one thread, ``concurrency``
connections each sending its next request as soon as the previous one answers (closed loop), for a
fixed time after a short unmeasured warm-up. A Lua script cycles through the given JSON bodies and
prints wrk's own latency percentiles and counts as one JSON line at the end.

wrk is written in C and uses a fraction of the CPU a Python client needs for the same load: on this
2-core machine the load generator shares the cores with the servers it measures.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.loadgen import Throughput

MARKER = "WRK_RESULT "
# Bodies (one JSON document per line) are read once per thread and sent in turn; non-2xx answers are
# counted by wrk as status errors.
SCRIPT = r"""
local requests = {}
local next_request = 1

function init(args)
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, line)
  end
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


class WrkMissingError(RuntimeError):
    """wrk is not installed."""


@dataclass(frozen=True)
class WrkResult(Throughput):
    p50_ms: float
    p95_ms: float
    p99_ms: float


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissingError("wrk is not installed: `make bench-tools` (apt-get install wrk)")
    return path


def _wrk(url: str, bodies_file: Path, concurrency: int, duration_s: float) -> dict[str, int]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(SCRIPT)
        script.flush()
        # wrk takes whole seconds.
        argv = [wrk_binary(), "-t1", f"-c{concurrency}", f"-d{max(1, math.ceil(duration_s))}s", "--timeout", "10s"]
        argv += ["-s", script.name, url, "--", str(bodies_file)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60, check=True)
    line = next((line for line in result.stdout.splitlines() if line.startswith(MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {result.stdout[-500:]} {result.stderr[-500:]}")
    return json.loads(line.removeprefix(MARKER))


def run_wrk(
    url: str,
    bodies: list[object],
    *,
    concurrency: int,
    duration_s: float,
    rows_per_request: int = 1,
    warmup_s: float = 1.0,
    label: str = "",
) -> WrkResult:
    """POST the ``bodies`` in turn to ``url`` for ``duration_s`` (after ``warmup_s`` not measured; both
    rounded up to whole seconds)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as bodies_file:
        bodies_file.write("".join(json.dumps(body, separators=(",", ":")) + "\n" for body in bodies))
        bodies_file.flush()
        if warmup_s > 0:
            _wrk(url, Path(bodies_file.name), concurrency, warmup_s)
        measured = _wrk(url, Path(bodies_file.name), concurrency, duration_s)
    errors = measured["status_errors"] + measured["socket_errors"]
    return WrkResult(
        label=label,
        concurrency=concurrency,
        rows_per_request=rows_per_request,
        # Completed requests with a 2xx answer: the throughput counts only those.
        requests=measured["requests"] - measured["status_errors"],
        errors=errors,
        elapsed_s=measured["duration_us"] / 1e6,
        p50_ms=measured["p50_us"] / 1000,
        p95_ms=measured["p95_us"] / 1000,
        p99_ms=measured["p99_us"] / 1000,
    )
