"""The reference profile's bins against values worked out by hand."""

import numpy as np
import pytest

from mlops_common.features import FEATURE_NAMES
from mlops_common.reference_profile import SCORE_BIN_EDGES, bin_fractions, feature_profile, reference_profile


def test_deciles_of_1_to_100_give_ten_equal_bins():
    profile = feature_profile(np.arange(1, 101, dtype=float))
    # numpy's default (linear) quantiles of 1..100: 10.9, 20.8, ..., 90.1
    assert profile["inner_edges"] == pytest.approx([10.9, 20.8, 30.7, 40.6, 50.5, 60.4, 70.3, 80.2, 90.1])
    assert profile["fractions"] == pytest.approx([0.1] * 10)
    assert profile["missing_rate"] == 0.0
    assert profile["rows"] == 100


def test_missing_values_are_a_rate_not_a_bin_and_ties_collapse_edges():
    values = np.array([0.0] * 6 + [1.0] * 2 + [np.nan] * 2)
    profile = feature_profile(values)
    assert profile["missing_rate"] == pytest.approx(0.2)
    # Deciles of six 0s and two 1s: 0 (seven times, collapsed), 0.6 (linear interpolation), 1.
    assert profile["inner_edges"] == pytest.approx([0.0, 0.6, 1.0])
    assert profile["fractions"] == pytest.approx([0.0, 0.75, 0.0, 0.25])
    assert feature_profile(np.array([np.nan, np.nan]))["missing_rate"] == 1.0


def test_bins_are_half_open_with_open_ends():
    edges = np.array([1.0, 2.0])
    assert bin_fractions(np.array([-5.0, 1.0, 1.5, 2.0, 9.0]), edges) == pytest.approx([0.2, 0.4, 0.4])


def test_reference_profile_covers_every_feature_and_the_score():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(500, len(FEATURE_NAMES)))
    scores = np.array([0.01] * 90 + [0.97] * 10)
    profile = reference_profile(features, scores)
    assert list(profile["features"]) == list(FEATURE_NAMES)
    assert all(sum(p["fractions"]) == pytest.approx(1.0) for p in profile["features"].values())
    assert profile["score"]["inner_edges"] == list(SCORE_BIN_EDGES)
    assert profile["score"]["fractions"][0] == pytest.approx(0.9)
    assert profile["score"]["fractions"][-1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="feature columns"):
        reference_profile(features[:, :3], scores)
