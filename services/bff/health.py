"""What /health/ready and the ``bff_dependency_up`` gauge report: Triton's model and the online store.

A BFF pod is ready once it has seen both answer (it can serve), and stays ready while one of them is
down: it then answers predictions with fast 503s and says so here and in its metrics. Were readiness to
follow the dependencies, one Triton restart would take every BFF pod out of its Service at once, and
clients would get connection errors instead of a 503 with `Retry-After`.
"""

import asyncio
import contextlib

from bff.metrics import DEPENDENCY_UP
from bff.online_features import OnlineFeatures
from bff.schemas import Readiness
from mlops_common.triton_client import TritonPredictor


class DependencyProbe:
    def __init__(self, triton: TritonPredictor, online: OnlineFeatures, *, interval_s: float):
        self.triton = triton
        self.online = online
        self.interval_s = interval_s
        self.started = False  # both dependencies have answered once since the process started
        self._prober: asyncio.Task | None = None

    async def start(self) -> None:
        await self.check()
        self._prober = asyncio.create_task(self._keep_checking(), name="dependency-probe")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober

    async def check(self) -> Readiness:
        triton_model, online_store = await asyncio.gather(self.triton.model_ready(), self.online.ping())
        DEPENDENCY_UP.labels("triton_model").set(triton_model)
        DEPENDENCY_UP.labels("online_store").set(online_store)
        self.started = self.started or (triton_model and online_store)
        return Readiness(ready=self.started, triton_model=triton_model, online_store=online_store)

    async def _keep_checking(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()
