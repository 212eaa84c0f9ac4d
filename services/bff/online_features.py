"""Feature vectors for a request: from the online store, the body, or both (body wins).

The online store is Feast's Redis store, read here directly: one pipelined ``HMGET`` per applicant and
feature view, with Feast's own entity-key serialisation and field hashing (what its ``online_read``
does), and nothing else on the request path. Feast's Python read also consults its registry per call,
and every ``cache_ttl_seconds`` re-downloads it inside the call, on the event loop; here the registry is
read at start and re-read every ``FEAST_REGISTRY_REFRESH_S`` in a thread, and the read plan swapped in
whole. tests/bff prove both reads return the same values for the same applicants.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from redis.exceptions import RedisError

from bff.bodies import Rows, feature_names_where
from bff.errors import EntityNotFoundError
from mlops_common.errors import DependencyUnavailableError
from mlops_common.features import ENTITY_KEY, FEATURE_NAMES, FEATURE_SERVICE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureRows:
    matrix: np.ndarray  # float32 [n, N_FEATURES], FEATURE_NAMES order; NaN where the store has no value
    from_store: list[list[str]]
    entity_ids: list[int | None]


@dataclass(frozen=True)
class ReadPlan:
    """What to read for the FeatureService, from one registry snapshot: per feature view the hash
    fields of its features, and where each value goes in FEATURE_NAMES order."""

    project: bytes
    key_version: int
    fields: tuple[tuple[bytes, ...], ...]  # per feature view
    columns: tuple[tuple[int, ...], ...]  # per feature view: FEATURE_NAMES index of each field

    @classmethod
    def of(cls, store: FeatureStore) -> "ReadPlan":
        config = store.config
        versioned = config.registry.enable_online_feature_view_versioning
        service = store.get_feature_service(FEATURE_SERVICE, allow_cache=True)
        fields, columns = [], []
        for projection in service.feature_view_projections:
            view = store.get_feature_view(projection.name, allow_registry_cache=True)
            stored_name = compute_versioned_name(view, versioned)
            names = [f.name for f in projection.features]
            fields.append(tuple(_mmh3(f"{stored_name}:{name}") for name in names))
            columns.append(tuple(FEATURE_NAMES.index(name) for name in names))
        served = sorted(FEATURE_NAMES[c] for view in columns for c in view)
        if served != sorted(FEATURE_NAMES):
            raise ValueError(f"{FEATURE_SERVICE} serves {served}, the model needs {sorted(FEATURE_NAMES)}")
        return cls(config.project.encode(), config.entity_key_serialization_version, tuple(fields), tuple(columns))

    def redis_key(self, entity_id: int) -> bytes:
        key = EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(int64_val=entity_id)])
        return serialize_entity_key(key, entity_key_serialization_version=self.key_version) + self.project


def _value(raw: bytes | None) -> float | None:
    if not raw:
        return None
    value = Value()
    value.ParseFromString(raw)
    kind = value.WhichOneof("val")
    return None if kind is None else getattr(value, kind)


class OnlineFeatures:
    """Async reads of the FeatureService's rows from Feast's Redis online store, with a timeout."""

    def __init__(self, store: FeatureStore, timeout_s: float, registry_refresh_s: float):
        self.store = store
        self.timeout_s = timeout_s
        self.registry_refresh_s = registry_refresh_s
        self.plan = ReadPlan.of(store)
        self._redis: Any = None
        self._refresher: asyncio.Task | None = None

    async def start(self) -> None:
        # Feast's own client for the configured store (single node, cluster or sentinel, its connection string).
        self._redis = await RedisOnlineStore()._get_client_async(self.store.config.online_store)
        self._refresher = asyncio.create_task(self._refresh_registry())
        if not await self.ping():
            log.warning("online store not reachable at start; requests with %s will get 503 until it is", ENTITY_KEY)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._redis is not None:
            await self._redis.aclose()

    async def _refresh_registry(self) -> None:
        while True:
            await asyncio.sleep(self.registry_refresh_s)
            try:
                self.plan = await asyncio.to_thread(self._reread_plan)
            except Exception as err:  # the last plan keeps serving
                log.warning("Feast registry refresh failed, serving with the previous one: %s", err)

    def _reread_plan(self) -> ReadPlan:
        self.store.refresh_registry()
        return ReadPlan.of(self.store)

    async def fetch(self, entity_ids: list[int]) -> dict[int, dict[str, float | None]]:
        """Each distinct id's features by name (None: no value); EntityNotFoundError for ids without any."""
        plan = self.plan
        unique = list(dict.fromkeys(entity_ids))
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for entity_id in unique:
                        key = plan.redis_key(entity_id)
                        for fields in plan.fields:
                            pipe.hmget(key, fields)
                    replies = await pipe.execute()
        except (TimeoutError, OSError, RedisError) as err:
            raise DependencyUnavailableError(f"online store: {type(err).__name__}: {err}") from err
        rows, views, missing = {}, len(plan.fields), []
        for n, entity_id in enumerate(unique):
            values: list[float | None] = [None] * len(FEATURE_NAMES)
            for view, reply in enumerate(replies[n * views : (n + 1) * views]):
                for column, raw in zip(plan.columns[view], reply, strict=True):
                    values[column] = _value(raw)
            if all(v is None for v in values):
                missing.append(entity_id)
            rows[entity_id] = dict(zip(FEATURE_NAMES, values, strict=True))
        if missing:
            raise EntityNotFoundError(missing)
        return rows

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await self._redis.ping())
        except Exception:
            return False


async def assemble(parsed: Rows, online: OnlineFeatures) -> FeatureRows:
    """The model's rows: the body's values and, for rows with an applicant id, the stored values of the
    features the body did not give (NaN where the store has none). One store read for the whole batch."""
    ids = parsed.entity_ids
    keyed = [row for row, entity_id in enumerate(ids) if entity_id is not None]
    matrix = parsed.matrix
    from_store = np.zeros_like(parsed.given)  # the store filled the feature in
    if keyed:
        stored = await online.fetch([ids[row] for row in keyed])
        store_rows = np.array([[stored[ids[row]][name] for name in FEATURE_NAMES] for row in keyed], dtype=np.float64)
        from_body = parsed.given[keyed]
        matrix = matrix.copy()
        matrix[keyed] = np.where(from_body, matrix[keyed], store_rows)  # None -> NaN above
        from_store[keyed] = ~from_body
    return FeatureRows(matrix, feature_names_where(from_store), ids)
