"""An inference-log record's JSON line as msgspec structs: the BFF writes records with them and the log
worker's fast reader reads them back (``log_worker.fast_reader``), both without a model per record.

``InferenceLogRecord`` (``mlops_common.inference_log``) still defines what a valid record is; the
constraints here are the reader's, which is stricter than the model, never looser (the fast reader's tests
hold the two to that). Apart from the model, so that only the two services on the log's hot path need
msgspec.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from mlops_common.features import FEATURE_NAMES
from mlops_common.inference_log import SCHEMA_VERSION
from mlops_common.rollout import Role

WireFeatures = msgspec.defstruct(
    "WireFeatures", [(name, float | None) for name in FEATURE_NAMES], forbid_unknown_fields=True
)


class WireRecord(msgspec.Struct, forbid_unknown_fields=True):
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    features: WireFeatures  # type: ignore[valid-type]
    # The reader checks these once per distinct value (a message has one or two), not per record.
    model_name: str
    model_version: str
    probability: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    decision: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    latency_ms: Annotated[float, msgspec.Meta(ge=0.0)]
    schema_version: Literal[1, 2] = SCHEMA_VERSION
    entity_id: int | None = None
    store_features: list[str] = []
    role: Role = Role.CHAMPION
