"""A small closed-loop HTTP load generator (aiohttp): ``concurrency`` workers, each sending its next
request as soon as the previous one answers, bounded by a request count and a duration.

Latency is measured per request from just before sending to the full body read; throughput is
completed requests (times rows per request) over the wall time of the measured part. A warm-up
phase (not measured) runs first. ``on_response``, if given, sees the body of every answer with
status 200, warm-up included, as soon as it is read.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class Throughput:
    """What any load measured (this generator's or wrk's, ``benchmarks.wrk``): completed requests over time."""

    label: str
    concurrency: int
    rows_per_request: int
    requests: int
    errors: int
    elapsed_s: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.requests_per_s * self.rows_per_request


@dataclass(frozen=True)
class LoadResult(Throughput):
    latencies_ms: tuple[float, ...]

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)


async def run_load(
    url: str,
    bodies: Callable[[int], object],
    *,
    concurrency: int,
    rows_per_request: int = 1,
    max_requests: int = 5000,
    duration_s: float = 10.0,
    warmup_requests: int = 50,
    label: str = "",
    on_response: Callable[[bytes], None] | None = None,
) -> LoadResult:
    """POST ``bodies(i)`` (JSON-encoded once per distinct body object) to ``url``."""
    encoded: dict[int, bytes] = {}

    def payload(i: int) -> bytes:
        body = bodies(i)
        key = id(body)
        if key not in encoded:
            encoded[key] = json.dumps(body).encode()
        return encoded[key]

    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def warm(n: int) -> None:
            for i in range(n):
                async with session.post(url, data=payload(i), headers=headers) as response:
                    body = await response.read()
                if on_response is not None and response.status == 200:
                    on_response(body)

        per_worker = max(1, warmup_requests // concurrency)
        await asyncio.gather(*(warm(per_worker) for _ in range(concurrency)))

        latencies: list[float] = []
        errors = 0
        sent = 0
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal errors, sent
            while sent < max_requests and time.perf_counter() < deadline:
                i = sent
                sent += 1
                data = payload(i)
                started = time.perf_counter()
                try:
                    async with session.post(url, data=data, headers=headers) as response:
                        body = await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                    if on_response is not None:
                        on_response(body)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(label, concurrency, rows_per_request, len(latencies), errors, elapsed, tuple(latencies))
