"""Concurrent Triton calls for one model version, merged into one Triton request while the worker is busy
(adaptive batching, as the API servers of BentoML and Ray Serve do it).

Triton's dynamic batcher merges requests too, but only after each has paid for its own HTTP request, its
own parse in Triton and, with the Python backend, its own trip to the backend's process: per row, that
costs more than the model itself. Here the merge happens before the wire, with no timer. While the worker
has at least ``merge_min_in_flight`` prediction requests in flight, a call of a version that has a Triton
request under way waits; once none is under way, the calls that waited go together (requests of up to
``max_rows`` rows), so a busy worker has one request per version under way at a time. Below that, every
call goes at once: a worker with few requests would only idle while calls wait (a merge is worth it when
the worker has other requests to work on meanwhile).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from bff.metrics import TRITON_REQUEST_ROWS, RequestsInFlight
from mlops_common.triton_client import TritonPredictor


@dataclass
class _Call:
    matrix: np.ndarray
    request_id: str
    answer: asyncio.Future[tuple[np.ndarray, str]]


@dataclass
class _Lane:
    """One model version's requests under way and the calls waiting for them, in groups of up to max_rows."""

    under_way: int = 0
    waiting: deque[list[_Call]] = field(default_factory=deque)
    waiting_rows: int = 0  # rows of the last group


class TritonBatcher:
    def __init__(
        self,
        triton: TritonPredictor,
        *,
        max_rows: int,
        merge_min_in_flight: int,
        requests_in_flight: RequestsInFlight,
    ):
        """``merge_min_in_flight``: the worker's requests in flight (``requests_in_flight``) from which calls
        wait to be merged (0: never, every call its own request)."""
        self.triton = triton
        self.max_rows = max_rows
        self.merge_min_in_flight = merge_min_in_flight
        self._requests = requests_in_flight
        self._lanes: defaultdict[str, _Lane] = defaultdict(_Lane)
        self._sending: set[asyncio.Task] = set()

    async def predict(self, matrix: np.ndarray, *, version: str, request_id: str) -> tuple[np.ndarray, str]:
        """What ``TritonPredictor.predict`` answers for these rows; a merged request carries the id of its
        first call (Triton's logs and traces show that one)."""
        lane = self._lanes[version]
        if not lane.under_way or not self._busy():
            lane.under_way += 1
            try:
                return await self._send(matrix, version, request_id)
            finally:
                lane.under_way -= 1
                self._dispatch(version, lane)
        call = _Call(matrix, request_id, asyncio.get_running_loop().create_future())
        if lane.waiting and lane.waiting_rows + len(matrix) <= self.max_rows:
            lane.waiting[-1].append(call)
            lane.waiting_rows += len(matrix)
        else:
            lane.waiting.append([call])
            lane.waiting_rows = len(matrix)
        return await call.answer

    async def close(self) -> None:
        """Let the merged requests under way answer their calls."""
        if self._sending:
            await asyncio.wait(self._sending)

    async def _send(self, matrix: np.ndarray, version: str, request_id: str) -> tuple[np.ndarray, str]:
        TRITON_REQUEST_ROWS.observe(len(matrix))
        return await self.triton.predict(matrix, version=version, request_id=request_id)

    def _busy(self) -> bool:
        return 0 < self.merge_min_in_flight <= self._requests.count

    def _dispatch(self, version: str, lane: _Lane) -> None:
        while lane.waiting and (not lane.under_way or not self._busy()):
            # A call whose request gave up (its budget, a disconnect) has a cancelled answer: not sent.
            group = [call for call in lane.waiting.popleft() if not call.answer.done()]
            if not lane.waiting:
                lane.waiting_rows = 0
            if group:
                lane.under_way += 1
                task = asyncio.create_task(self._send_merged(group, version, lane))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _send_merged(self, group: list[_Call], version: str, lane: _Lane) -> None:
        try:
            matrix = group[0].matrix if len(group) == 1 else np.concatenate([call.matrix for call in group])
            probabilities, answered_by = await self._send(matrix, version, group[0].request_id)
        except Exception as err:  # every call of the request fails as it would have alone
            for call in group:
                if not call.answer.done():
                    call.answer.set_exception(err)
            return
        except asyncio.CancelledError:
            for call in group:
                call.answer.cancel()
            raise
        finally:
            lane.under_way -= 1
            self._dispatch(version, lane)
        start = 0
        for call in group:
            stop = start + len(call.matrix)
            if not call.answer.done():
                call.answer.set_result((probabilities[start:stop], answered_by))
            start = stop
