"""Progressive delivery of a challenger: the policy, how it reaches the BFFs, and who answers a row.

The registry holds the truth. Aliases name the versions (``champion``, ``challenger``); the policy is
the settings' ``ROLLOUT_*`` defaults, overridden at run time by the registered model's ``rollout.*``
tags (``mlops rollout canary --weight 20``). Model sync loads both versions into the one Triton model
and writes the routing (versions and policy) into that model's config parameters, so every BFF reads
a routing that only names versions Triton has loaded (``Routing.from_parameters``), without a
restart and without a client of its own for MLflow.

Roles: ``champion`` answered the client; ``canary`` is the challenger answering the client (a sticky
share of applicants); ``shadow`` is the challenger scoring a row off the request path (the client got
the champion's answer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from pydantic import Field

from mlops_common.settings import PlatformSettings

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"


class RolloutMode(StrEnum):
    OFF = "off"
    SHADOW = "shadow"
    CANARY = "canary"


class Role(StrEnum):
    CHAMPION = "champion"
    CANARY = "canary"
    SHADOW = "shadow"


# Shadow records share the table with the champion's: their key gets a suffix that X-Request-ID
# cannot contain (its pattern has no "~"), so the two never collide.
SHADOW_ID_SUFFIX = "~shadow"

# Registered-model tags that override the settings at run time.
TAG_MODE = "rollout.mode"
TAG_CANARY_PERCENT = "rollout.canary_percent"
TAG_SHADOW_SAMPLE = "rollout.shadow_sample"
# Triton model-config parameters carrying the routing to the BFFs.
PARAM_PREFIX = "rollout_"


class RolloutSettings(PlatformSettings):
    """The policy's defaults (chart values ``rollout.*``); the registered model's tags override them."""

    # off: only the champion is served; shadow: the challenger also scores (a share of) the requests,
    # off the request path; canary: the challenger answers ROLLOUT_CANARY_PERCENT % of the applicants.
    rollout_mode: RolloutMode = RolloutMode.OFF
    rollout_canary_percent: float = Field(10.0, ge=0, le=100)
    # The share of requests the challenger also scores in shadow mode.
    rollout_shadow_sample: float = Field(1.0, ge=0, le=1)


@dataclass(frozen=True)
class RolloutPolicy:
    mode: RolloutMode = RolloutMode.OFF
    canary_percent: float = 10.0
    shadow_sample: float = 1.0

    @classmethod
    def from_settings(cls, settings: RolloutSettings) -> RolloutPolicy:
        return cls(settings.rollout_mode, settings.rollout_canary_percent, settings.rollout_shadow_sample)

    def with_tags(self, tags: Mapping[str, str]) -> RolloutPolicy:
        """The policy with the registered model's ``rollout.*`` tags applied; a malformed tag is an error
        naming it (somebody wrote it by hand: serving must not guess)."""
        policy = self
        if TAG_MODE in tags:
            try:
                policy = replace(policy, mode=RolloutMode(tags[TAG_MODE]))
            except ValueError:
                expected = [m.value for m in RolloutMode]
                raise ValueError(f"tag {TAG_MODE}={tags[TAG_MODE]!r}: expected one of {expected}") from None
        if TAG_CANARY_PERCENT in tags:
            policy = replace(policy, canary_percent=_number_tag(tags, TAG_CANARY_PERCENT, 0, 100))
        if TAG_SHADOW_SAMPLE in tags:
            policy = replace(policy, shadow_sample=_number_tag(tags, TAG_SHADOW_SAMPLE, 0, 1))
        return policy


def _number_tag(tags: Mapping[str, str], key: str, low: float, high: float) -> float:
    try:
        value = float(tags[key])
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ValueError(f"tag {key}={tags[key]!r}: expected a number from {low} to {high}")
    return value


@dataclass(frozen=True)
class Routing:
    """Which loaded version answers whom; what model sync writes and each BFF reads."""

    champion: str
    challenger: str | None = None
    policy: RolloutPolicy = RolloutPolicy()

    @property
    def mode(self) -> RolloutMode:
        return self.policy.mode if self.challenger else RolloutMode.OFF

    def parameters(self) -> dict[str, str]:
        return {
            f"{PARAM_PREFIX}champion": self.champion,
            f"{PARAM_PREFIX}challenger": self.challenger or "",
            f"{PARAM_PREFIX}mode": self.mode.value,
            f"{PARAM_PREFIX}canary_percent": repr(self.policy.canary_percent),
            f"{PARAM_PREFIX}shadow_sample": repr(self.policy.shadow_sample),
        }

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> Routing | None:
        """The routing in a model config's parameters; None for a config without one (an older model sync)."""
        champion = parameters.get(f"{PARAM_PREFIX}champion")
        if not champion:
            return None
        policy = RolloutPolicy(
            RolloutMode(parameters[f"{PARAM_PREFIX}mode"]),
            float(parameters[f"{PARAM_PREFIX}canary_percent"]),
            float(parameters[f"{PARAM_PREFIX}shadow_sample"]),
        )
        return cls(champion, parameters.get(f"{PARAM_PREFIX}challenger") or None, policy)

    def canary_rows(self, keys: np.ndarray) -> np.ndarray:
        """Which rows the challenger answers (canary mode), from each row's routing key (``routing_keys``)."""
        if self.mode is not RolloutMode.CANARY:
            return np.zeros(len(keys), dtype=bool)
        return sticky_fraction(keys, salt=self.challenger or "") < self.policy.canary_percent / 100

    def shadowed(self, key: int) -> bool:
        """Whether the challenger also scores this request (shadow mode), by its routing key."""
        if self.mode is not RolloutMode.SHADOW:
            return False
        return bool(
            sticky_fraction(np.array([key], dtype=np.uint64), salt=self.challenger or "")[0] < self.policy.shadow_sample
        )


def routing_key(entity_id: int | None, request_id: str) -> int:
    """An applicant's id, so one applicant always meets the same version; else a hash of the request id."""
    if entity_id is not None:
        return entity_id
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "little")


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def sticky_fraction(keys: np.ndarray, *, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per key, the same for the same key and salt (splitmix64's finaliser).
    The salt (the challenger's version) gives each rollout its own sample of applicants."""
    seed = np.uint64(int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "little"))
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) ^ seed
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
