"""The rollout's pure logic: policy from settings and tags, routing through Triton config parameters,
sticky assignment of applicants."""

import numpy as np
import pytest
from scipy.stats import binomtest

from mlops_common.rollout import (
    RolloutMode,
    RolloutPolicy,
    RolloutSettings,
    Routing,
    routing_key,
    sticky_fraction,
)


def test_tags_override_the_settings_and_malformed_tags_are_named():
    base = RolloutPolicy.from_settings(RolloutSettings(rollout_mode="shadow", rollout_shadow_sample=0.5))
    assert base == RolloutPolicy(RolloutMode.SHADOW, 10.0, 0.5)
    assert base.with_tags({"rollout.mode": "canary", "rollout.canary_percent": "20"}) == RolloutPolicy(
        RolloutMode.CANARY, 20.0, 0.5
    )
    for tags, named in (
        ({"rollout.mode": "blue-green"}, "rollout.mode"),
        ({"rollout.canary_percent": "120"}, "rollout.canary_percent"),
        ({"rollout.shadow_sample": "half"}, "rollout.shadow_sample"),
    ):
        with pytest.raises(ValueError, match=named):
            base.with_tags(tags)


def test_routing_round_trips_through_config_parameters_and_is_off_without_a_challenger():
    routing = Routing("4", "5", RolloutPolicy(RolloutMode.CANARY, 12.5, 1.0))
    assert Routing.from_parameters(routing.parameters()) == routing
    alone = Routing("4", None, RolloutPolicy(RolloutMode.CANARY, 12.5, 1.0))
    assert alone.mode is RolloutMode.OFF
    assert Routing.from_parameters(alone.parameters()).challenger is None
    assert Routing.from_parameters({"intra_op_thread_count": "1"}) is None


def test_canary_share_is_binomial_and_sticky_per_applicant():
    routing = Routing("4", "5", RolloutPolicy(RolloutMode.CANARY, 20.0, 1.0))
    applicants = np.arange(100_000, 105_000, dtype=np.uint64)
    chosen = routing.canary_rows(applicants)
    interval = binomtest(int(chosen.sum()), len(applicants), 0.2).proportion_ci(confidence_level=0.999)
    assert interval.low <= 0.2 <= interval.high
    # The same applicant, in any order or batch, meets the same version.
    shuffled = np.random.default_rng(3).permutation(applicants)
    again = dict(zip(shuffled.tolist(), routing.canary_rows(shuffled).tolist(), strict=True))
    assert all(again[a] == c for a, c in zip(applicants.tolist(), chosen.tolist(), strict=True))
    # Another challenger samples other applicants; off and shadow send nobody to the challenger.
    other = Routing("4", "6", routing.policy).canary_rows(applicants)
    assert 0 < np.count_nonzero(other != chosen) < len(applicants)
    for mode in (RolloutMode.OFF, RolloutMode.SHADOW):
        assert not Routing("4", "5", RolloutPolicy(mode, 20.0, 1.0)).canary_rows(applicants).any()


def test_routing_keys_are_applicants_or_request_hashes_and_fractions_uniform():
    assert routing_key(100002, "r-1") == 100002
    assert routing_key(None, "r-1") == routing_key(None, "r-1") != routing_key(None, "r-2")
    fractions = sticky_fraction(np.arange(20_000, dtype=np.uint64), salt="7")
    assert fractions.min() >= 0
    assert fractions.max() < 1
    counts, _ = np.histogram(fractions, bins=10, range=(0, 1))
    assert counts.min() > 1_800
    assert counts.max() < 2_200
