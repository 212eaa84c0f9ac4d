"""Several uvicorn worker processes behind one port, and one /metrics that adds their metrics up.

Each worker is a process of its own (event loop, Triton, Redis and RabbitMQ connections, spool
slot); prometheus-client's multiprocess mode has every process write its metric values to files in one
directory, which the supervisor's metrics server reads and aggregates on each scrape. prometheus-client
is imported inside the functions: it picks file-backed values only if the directory is set when it is
first imported, i.e. after ``share_metrics_between_workers``.
"""

import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer

# prometheus-client reads the first name; Feast reads the second and, if it is unset, makes a directory
# of its own on import and sets both.
MULTIPROCESS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# Only the BFF's own series: Feast creates metrics of its feature server when imported.
METRIC_PREFIX = "bff_"


def usable_cpus() -> int:
    """CPUs this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's
    ``limits.cpu``, rounded down, at least 1)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.floor(int(quota) / int(period))))


def share_metrics_between_workers() -> Path:
    """A fresh directory for the processes' metric files, named in this process' environment, which the
    workers inherit (and this process too, when it serves as the only worker)."""
    directory = Path(tempfile.mkdtemp(prefix="bff-metrics-"))
    for name in MULTIPROCESS_VARIABLES:
        os.environ[name] = str(directory)
    return directory


def serve_worker_metrics(directory: Path, host: str, port: int) -> WSGIServer:
    """/metrics of every worker, summed (gauges as their ``multiprocess_mode`` says), on its own port
    from a thread of the supervisor process."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    class WorkerMetrics:
        def __init__(self) -> None:
            self._all = MultiProcessCollector(None, path=str(directory))

        def collect(self) -> Iterator:
            return (family for family in self._all.collect() if family.name.startswith(METRIC_PREFIX))

    registry = CollectorRegistry()
    registry.register(WorkerMetrics())
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server


def retire_worker_metrics() -> None:
    """At a worker's exit: its live gauges (in flight, spool backlog, broker connected) stop counting.
    Its counters and histograms stay in the sums, as Prometheus expects of counters."""
    from prometheus_client import multiprocess, values

    if values.ValueClass is not values.MutexValue:
        multiprocess.mark_process_dead(os.getpid())
