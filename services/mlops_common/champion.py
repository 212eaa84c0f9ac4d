"""Moves of the registry's aliases, with their audit trail, for every actor that makes them (the
operator CLI, the monitor's rollout analysis).

Every move of ``champion`` sets tags on the version that becomes champion (``champion.action``,
``champion.by``, ``champion.at`` (UTC ISO-8601), ``champion.reason``, ``champion.previous``) and appends
one event to the registered model's tags (``audit/<UTC time>``, a JSON object), so the history keeps
every move. A challenger's rollout ends with ``rollout.decision`` (promoted or rolled_back), who decided,
when, why and the analysis' figures as tags on the challenger's version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient

from mlops_common.rollout import CHALLENGER_ALIAS, CHAMPION_ALIAS

TAG_ACTION, TAG_BY, TAG_AT, TAG_REASON, TAG_PREVIOUS = (
    f"champion.{name}" for name in ("action", "by", "at", "reason", "previous")
)
AUDIT_PREFIX = "audit/"
ROLLOUT_DECISION = "rollout.decision"
# Set on the challenger's version when its analysis starts (monitor.rollout); the analysis' window.
ROLLOUT_STARTED_AT = "rollout.started_at"
PROMOTED, ROLLED_BACK = "promoted", "rolled_back"


@dataclass(frozen=True)
class Event:
    at: str
    action: str
    version: str
    previous: str
    by: str
    reason: str


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def move_champion(
    client: MlflowClient, name: str, version: str, *, previous: str | None, action: str, by: str, reason: str
) -> Event:
    """Point ``champion`` at ``version`` and record who, when, why and the previous champion."""
    event = Event(now_iso(), action, version, previous or "none", by, reason)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    for key, value in (
        (TAG_ACTION, action),
        (TAG_BY, by),
        (TAG_AT, event.at),
        (TAG_REASON, reason),
        (TAG_PREVIOUS, event.previous),
    ):
        client.set_model_version_tag(name, version, key, value)
    stamp = event.at.replace(":", "").replace("+0000", "Z")
    client.set_registered_model_tag(name, f"{AUDIT_PREFIX}{stamp}", json.dumps(asdict(event)))
    return event


def end_rollout(
    client: MlflowClient,
    name: str,
    challenger: str,
    *,
    champion: str | None,
    decision: str,
    by: str,
    reason: str,
    figures: Mapping[str, str] | None = None,
) -> Event | None:
    """End the challenger's rollout: ``promoted`` makes it champion (the old one stays recorded as its
    ``champion.previous``, for `mlops model rollback`), ``rolled_back`` leaves the champion alone. Either
    way the ``challenger`` alias is removed (model sync unloads it) and the decision is tagged."""
    event = None
    if decision == PROMOTED:
        event = move_champion(
            client, name, challenger, previous=champion, action="rollout-promote", by=by, reason=reason
        )
    client.delete_registered_model_alias(name, CHALLENGER_ALIAS)
    tags = {ROLLOUT_DECISION: decision, "rollout.by": by, "rollout.at": now_iso(), "rollout.reason": reason}
    version_tags = client.get_model_version(name, challenger).tags or {}
    if ROLLOUT_STARTED_AT in version_tags:
        # Kept under another name: a later rollout of the same version starts its own window.
        tags["rollout.analysed_from"] = version_tags[ROLLOUT_STARTED_AT]
        client.delete_model_version_tag(name, challenger, ROLLOUT_STARTED_AT)
    for key, value in {**tags, **(figures or {})}.items():
        client.set_model_version_tag(name, challenger, key, value[:5000])
    return event
