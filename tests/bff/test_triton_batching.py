"""Concurrent Triton calls merged into one request while the worker is busy (bff.batching), with a fake Triton
that holds its answers until told: pure logic, no server. Each call gets its own rows' answers in order,
whatever it shared."""

from __future__ import annotations

import asyncio

import numpy as np

from bff.batching import TritonBatcher
from bff.metrics import RequestsInFlight
from mlops_common.errors import DependencyUnavailableError


class HeldTriton:
    """Answers each row with its first feature, once ``release`` is set; records the requests it got."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int, str]] = []
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def predict(self, features: np.ndarray, *, version: str = "", request_id: str = ""):
        self.requests.append((version, len(features), request_id))
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return features[:, 0].copy(), version or "1"


def batcher_for(triton: HeldTriton, *, in_flight: int, merge_from: int = 6, max_rows: int = 256) -> TritonBatcher:
    """A batcher in a worker with ``in_flight`` requests, merging from ``merge_from``."""
    requests = RequestsInFlight()
    requests.count = in_flight
    return TritonBatcher(triton, max_rows=max_rows, merge_min_in_flight=merge_from, requests_in_flight=requests)  # type: ignore[arg-type]


def rows(*firsts: float) -> np.ndarray:
    matrix = np.zeros((len(firsts), 10), dtype=np.float32)
    matrix[:, 0] = firsts
    return matrix


async def calls(batcher: TritonBatcher, *matrices: np.ndarray, version: str = "1") -> list[asyncio.Task]:
    """Start one call per matrix, in order, and let each reach the batcher."""
    tasks = []
    for k, matrix in enumerate(matrices):
        tasks.append(asyncio.create_task(batcher.predict(matrix, version=version, request_id=f"r{k}")))
        await asyncio.sleep(0)
    return tasks


async def test_in_a_busy_worker_calls_wait_for_the_request_under_way_and_then_share_one_each_with_its_rows():
    triton = HeldTriton()
    batcher = batcher_for(triton, in_flight=6)
    tasks = await calls(batcher, rows(1), rows(2, 3), rows(4))
    assert triton.requests == [("1", 1, "r0")]  # the others wait for it
    triton.release.set()
    answers = await asyncio.gather(*tasks)
    assert triton.requests == [("1", 1, "r0"), ("1", 3, "r1")]  # one request for both, the first one's id
    assert [a[0].tolist() for a in answers] == [[1.0], [2.0, 3.0], [4.0]]
    assert all(version == "1" for _, version in answers)


async def test_in_a_worker_with_fewer_requests_than_the_threshold_no_call_waits():
    triton = HeldTriton()
    batcher = batcher_for(triton, in_flight=5)
    tasks = await calls(batcher, rows(1), rows(2), rows(3), rows(4))
    assert [n for _, n, _ in triton.requests] == [1, 1, 1, 1]
    triton.release.set()
    assert [a[0].tolist() for a in await asyncio.gather(*tasks)] == [[1.0], [2.0], [3.0], [4.0]]


async def test_zero_means_every_call_is_its_own_request_however_busy():
    triton = HeldTriton()
    batcher = batcher_for(triton, in_flight=100, merge_from=0)
    tasks = await calls(batcher, *(rows(k) for k in range(20)))
    assert len(triton.requests) == 20
    triton.release.set()
    await asyncio.gather(*tasks)


async def test_a_merged_request_never_exceeds_max_rows():
    triton = HeldTriton()
    batcher = batcher_for(triton, in_flight=6, max_rows=4)
    tasks = await calls(batcher, rows(0), rows(1, 2), rows(3, 4), rows(5), rows(6, 7, 8, 9))
    triton.release.set()
    answers = await asyncio.gather(*tasks)
    # While one request is under way, the next waits: 1 row, then [2 + 2 rows], then [1 row], then [4 rows].
    assert [n for _, n, _ in triton.requests] == [1, 4, 1, 4]
    assert [a[0].tolist() for a in answers] == [[0.0], [1.0, 2.0], [3.0, 4.0], [5.0], [6.0, 7.0, 8.0, 9.0]]


async def test_versions_are_never_merged():
    triton = HeldTriton()
    batcher = batcher_for(triton, in_flight=6)
    first = await calls(batcher, rows(1), rows(2), version="4")
    second = await calls(batcher, rows(3), rows(4), version="5")
    triton.release.set()
    answers = await asyncio.gather(*first, *second)
    assert sorted(triton.requests) == [("4", 1, "r0"), ("4", 1, "r1"), ("5", 1, "r0"), ("5", 1, "r1")]
    assert [a[1] for a in answers] == ["4", "4", "5", "5"]


async def test_a_failed_merged_request_fails_each_of_its_calls_with_the_error():
    triton = HeldTriton()
    batcher = batcher_for(triton, in_flight=6)
    triton.failure = DependencyUnavailableError("triton: HTTP 503")
    tasks = await calls(batcher, rows(1), rows(2), rows(3))
    triton.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r) for r in results] == [DependencyUnavailableError] * 3
    assert len(triton.requests) == 2


async def test_a_call_that_gave_up_while_waiting_is_not_sent_and_the_others_are_answered():
    triton = HeldTriton()
    batcher = batcher_for(triton, in_flight=6)
    tasks = await calls(batcher, rows(1), rows(2), rows(3, 4))
    tasks[1].cancel()  # its request's budget ran out, say
    await asyncio.sleep(0)
    triton.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert triton.requests == [("1", 1, "r0"), ("1", 2, "r2")]
    assert results[2][0].tolist() == [3.0, 4.0]


class AnswersTheFirstRequestAtOnce(HeldTriton):
    """The first request is answered as soon as it comes, the later ones once ``release`` is set."""

    async def predict(self, features: np.ndarray, *, version: str = "", request_id: str = ""):
        if self.requests:
            return await super().predict(features, version=version, request_id=request_id)
        self.requests.append((version, len(features), request_id))
        await asyncio.sleep(0.01)  # the others come meanwhile
        return features[:, 0].copy(), version or "1"


async def test_calls_that_waited_while_the_worker_was_busy_all_go_at_once_when_it_no_longer_is():
    triton = AnswersTheFirstRequestAtOnce()
    requests = RequestsInFlight()
    requests.count = 8
    batcher = TritonBatcher(triton, max_rows=1, merge_min_in_flight=6, requests_in_flight=requests)  # type: ignore[arg-type]
    tasks = await calls(batcher, rows(1), rows(2), rows(3))
    assert len(triton.requests) == 1  # busy: the other two wait, in groups of one row (max_rows)
    requests.count = 2
    await tasks[0]
    await asyncio.sleep(0)
    # Not busy any more: both waiting groups went on the first answer, not one after the other's answer.
    assert [n for _, n, _ in triton.requests] == [1, 1, 1]
    triton.release.set()
    assert [a[0].tolist() for a in await asyncio.gather(*tasks)] == [[1.0], [2.0], [3.0]]
