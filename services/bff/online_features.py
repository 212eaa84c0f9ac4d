"""Feature vectors for a request: from the online store, the body, or both (body wins)."""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from feast import FeatureStore
from redis.exceptions import RedisError

from bff.errors import DependencyUnavailableError, EntityNotFoundError
from mlops_common.features import ENTITY_KEY, FEATURE_DTYPE, FEATURE_NAMES, FEATURE_SERVICE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureRows:
    matrix: np.ndarray  # float32 [n, N_FEATURES], FEATURE_NAMES order; NaN where the store has no value
    from_store: list[list[str]]
    entity_ids: list[int | None]


class OnlineFeatures:
    """Async reads of the FeatureService from the online store, with a timeout."""

    def __init__(self, store: FeatureStore, timeout_s: float):
        self.store = store
        self.timeout_s = timeout_s
        self.service = store.get_feature_service(FEATURE_SERVICE)

    async def fetch(self, entity_ids: list[int]) -> dict[int, dict[str, Any]]:
        unique = list(dict.fromkeys(entity_ids))
        try:
            response = await asyncio.wait_for(
                self.store.get_online_features_async(
                    features=self.service, entity_rows=[{ENTITY_KEY: i} for i in unique]
                ),
                self.timeout_s,
            )
            columns = response.to_dict()
        except (TimeoutError, OSError, RedisError) as err:
            raise DependencyUnavailableError(f"online store: {type(err).__name__}: {err}") from err
        rows = {i: {name: columns[name][k] for name in FEATURE_NAMES} for k, i in enumerate(unique)}
        missing = [i for i, values in rows.items() if all(v is None for v in values.values())]
        if missing:
            raise EntityNotFoundError(missing)
        return rows

    async def warm_up(self) -> None:
        """The first read imports and connects lazily (~1 s); pay that at start, not in a request."""
        try:
            await self.store.get_online_features_async(features=self.service, entity_rows=[{ENTITY_KEY: -1}])
        except Exception as err:
            log.warning("online store not reachable at start (%s); requests will get 503 until it is", err)

    async def ping(self) -> bool:
        """The store answers (an unknown id is a valid answer)."""
        try:
            await asyncio.wait_for(
                self.store.get_online_features_async(features=self.service, entity_rows=[{ENTITY_KEY: -1}]),
                self.timeout_s,
            )
        except Exception:
            return False
        return True


async def assemble(requests: list[Any], online: OnlineFeatures) -> FeatureRows:
    """One float32 row per request. Entity rows are read from the store in one call for the batch.
    A feature given in the body wins (``null``: unknown, NaN); one not given comes from the store (NaN
    where the store has no value). Requests without an id have every feature given (checked before)."""
    entity_ids = [getattr(r, ENTITY_KEY) for r in requests]
    stored = (
        await online.fetch([i for i in entity_ids if i is not None]) if any(i is not None for i in entity_ids) else {}
    )
    matrix = np.empty((len(requests), len(FEATURE_NAMES)), dtype=FEATURE_DTYPE)
    from_store: list[list[str]] = []
    for row, (request, entity_id) in enumerate(zip(requests, entity_ids, strict=True)):
        values = stored.get(entity_id, {}) if entity_id is not None else {}
        used_store = []
        given_fields = request.model_fields_set
        for column, name in enumerate(FEATURE_NAMES):
            if name in given_fields:
                # An explicit null is an unknown value: NaN, as the trainer saw missing values.
                given = getattr(request, name)
                matrix[row, column] = np.nan if given is None else given
            else:
                value = values.get(name)
                matrix[row, column] = np.nan if value is None else value
                used_store.append(name)
        from_store.append(used_store if entity_id is not None else [])
    return FeatureRows(matrix, from_store, entity_ids)
