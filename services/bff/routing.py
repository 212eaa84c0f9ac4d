"""Which model version answers which row: champion, canary and shadow (``mlops_common.rollout``).

The routing comes from the Triton model's config, where model sync writes it together with the
versions it loaded; the router re-reads it every ``ROUTING_REFRESH_S`` off the request path. A batch
makes at most one Triton call per version. The challenger can never fail a client: a canary call that
fails or answers a probability outside [0, 1] is counted against the challenger and its rows are
scored by the champion instead; shadow calls run after the answer, bounded in number.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bff.batching import TritonBatcher
from bff.metrics import SHADOW_SKIPPED, RequestsInFlight, observe_call, observe_shadow, track_routing
from mlops_common.errors import DependencyUnavailableError, InferenceError
from mlops_common.rollout import SHADOW_ID_SUFFIX, Role, RolloutMode, Routing, routing_key
from mlops_common.triton_client import TritonPredictor, check_probabilities

log = logging.getLogger(__name__)


@dataclass
class Scored:
    probabilities: np.ndarray  # float32 [n]
    versions: list[str]
    roles: list[Role]


@dataclass
class ShadowScored:
    """The challenger's answers for rows the champion answered (shadow mode)."""

    probabilities: np.ndarray
    version: str
    request_ids: list[str]


class Router:
    def __init__(
        self,
        triton: TritonPredictor,
        *,
        refresh_s: float,
        shadow_max_pending: int,
        max_rows: int,
        merge_min_in_flight: int,
        requests_in_flight: RequestsInFlight,
    ):
        """The last three: how calls are merged into Triton requests (bff.batching.TritonBatcher)."""
        self.triton = triton
        self._batcher = TritonBatcher(
            triton, max_rows=max_rows, merge_min_in_flight=merge_min_in_flight, requests_in_flight=requests_in_flight
        )
        self.refresh_s = refresh_s
        self.shadow_max_pending = shadow_max_pending
        self.routing: Routing | None = None
        self._refresher: asyncio.Task | None = None
        self._shadows: set[asyncio.Task] = set()
        self._failing = False

    async def start(self) -> None:
        await self.refresh()
        self._refresher = asyncio.create_task(self._keep_refreshing(), name="routing-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        # Shadow calls are for the analysis only: finish the ones under way, briefly.
        if self._shadows:
            await asyncio.wait(self._shadows, timeout=self.triton.timeout_s)
        await self._batcher.close()

    async def refresh(self) -> None:
        try:
            routing = await self.triton.routing()
        except Exception as err:  # Triton down or the model unloaded: keep routing as before
            if not self._failing:
                log.warning("routing not refreshed (kept as it was): %s: %s", type(err).__name__, err)
            self._failing = True
            return
        self._failing = False
        if routing == self.routing:
            return
        # Triton publishes a config when its load starts: follow it once the versions it names answer.
        if routing is not None:
            for version in filter(None, (routing.champion, routing.challenger)):
                if not await self.triton.version_ready(version):
                    return
        log.info("routing: %s", routing)
        track_routing(self.routing, routing)
        self.routing = routing

    async def _keep_refreshing(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def _call(self, matrix: np.ndarray, version: str, role: Role, request_id: str) -> tuple[np.ndarray, str]:
        started = time.perf_counter()
        try:
            probabilities, answered_by = await self._batcher.predict(matrix, version=version, request_id=request_id)
            check_probabilities(probabilities, self.triton.model_name, answered_by)
        except (DependencyUnavailableError, InferenceError):
            observe_call(version or "unknown", role, time.perf_counter() - started, None)
            raise
        observe_call(answered_by, role, time.perf_counter() - started, probabilities)
        return probabilities, answered_by

    async def score(
        self, matrix: np.ndarray, entity_ids: list[int | None], row_ids: list[str], request_id: str
    ) -> Scored:
        """Probabilities, versions and roles for each row: the canary's share by the challenger, the rest
        (and any canary row the challenger failed) by the champion."""
        routing = self.routing
        if routing is None:  # no routing published: whatever version Triton serves
            probabilities, version = await self._call(matrix, "", Role.CHAMPION, request_id)
            return Scored(probabilities, [version] * len(matrix), [Role.CHAMPION] * len(matrix))
        canary = np.zeros(len(matrix), dtype=bool)
        if routing.mode is RolloutMode.CANARY:
            keys = np.array([routing_key(e, r) for e, r in zip(entity_ids, row_ids, strict=True)], dtype=np.uint64)
            canary = routing.canary_rows(keys)
        if not canary.any():
            probabilities, version = await self._call(matrix, routing.champion, Role.CHAMPION, request_id)
            return Scored(probabilities, [version] * len(matrix), [Role.CHAMPION] * len(matrix))

        champion_rows = ~canary
        calls = [self._call(matrix[canary], routing.challenger or "", Role.CANARY, request_id)]
        if champion_rows.any():
            calls.append(self._call(matrix[champion_rows], routing.champion, Role.CHAMPION, request_id))
        canary_result, *champion_result = await asyncio.gather(*calls, return_exceptions=True)
        for result in champion_result:
            if isinstance(result, BaseException):
                raise result
        probabilities = np.empty(len(matrix), dtype=np.float32)
        versions = np.empty(len(matrix), dtype=object)
        roles = np.empty(len(matrix), dtype=object)
        if champion_result:
            probabilities[champion_rows], versions[champion_rows] = champion_result[0]
            roles[champion_rows] = Role.CHAMPION
        if isinstance(canary_result, BaseException):
            log.warning("challenger %s failed; the champion answers its rows: %s", routing.challenger, canary_result)
            canary_result = await self._call(matrix[canary], routing.champion, Role.CHAMPION, request_id)
            roles[canary] = Role.CHAMPION
        else:
            roles[canary] = Role.CANARY
        probabilities[canary], versions[canary] = canary_result
        return Scored(probabilities, versions.tolist(), roles.tolist())

    def shadow(
        self,
        matrix: np.ndarray,
        champion: np.ndarray,
        row_ids: list[str],
        request_id: str,
        threshold: float,
        then: Callable[[ShadowScored], None],
    ) -> None:
        """In shadow mode, have the challenger score a sampled request after the answer; compare it with the
        champion's ``probabilities`` and hand its answers to ``then`` (the inference log)."""
        routing = self.routing
        if routing is None or routing.mode is not RolloutMode.SHADOW:
            return
        if not routing.shadowed(routing_key(None, request_id)):
            return
        if len(self._shadows) >= self.shadow_max_pending:
            SHADOW_SKIPPED.inc()
            return
        task = asyncio.create_task(
            self._shadow(routing.challenger or "", matrix, champion, row_ids, request_id, threshold, then)
        )
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self,
        version: str,
        matrix: np.ndarray,
        champion: np.ndarray,
        row_ids: list[str],
        request_id: str,
        threshold: float,
        then: Callable[[ShadowScored], None],
    ) -> None:
        with contextlib.suppress(DependencyUnavailableError, InferenceError):  # counted by _call
            probabilities, answered_by = await self._call(
                matrix, version, Role.SHADOW, f"{request_id}{SHADOW_ID_SUFFIX}"
            )
            observe_shadow(champion, probabilities, threshold)
            then(ShadowScored(probabilities, answered_by, [f"{row_id}{SHADOW_ID_SUFFIX}" for row_id in row_ids]))
