"""``observe_all``: the bucket counts and sum that ``Histogram.observe`` would give, value by value
(it writes prometheus_client's own counters: an upgrade that changes them fails here)."""

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from mlops_common.metrics import observe_all

BUCKETS = (0.1, 0.25, 0.5, 1.0)


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, tuple], float]:
    """The samples of the histogram ``name``, keyed by suffix (_bucket, _count, _sum) and labels."""
    return {
        (s.name.removeprefix(name), tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(f"{name}_") and not s.name.endswith("_created")
    }


def test_observe_all_equals_observe_one_by_one():
    rng = np.random.default_rng(5)
    # Values on the bounds (a bound belongs to its own bucket), beyond the last bound (+Inf), and random ones.
    values = np.concatenate([np.array([0.1, 0.25, 1.0, 1.5, 0.0], dtype=np.float32), rng.random(500, np.float32)])
    # Two names: in multiprocess mode (a PROMETHEUS_MULTIPROC_DIR in the environment) one name is one store.
    registry = CollectorRegistry()
    by_one = Histogram("score_one", "h", ["version"], buckets=BUCKETS, registry=registry).labels("1")
    in_bulk = Histogram("score_bulk", "h", ["version"], buckets=BUCKETS, registry=registry).labels("1")
    for value in values.tolist():
        by_one.observe(value)
    observe_all(in_bulk, values)
    got, expected = samples(registry, "score_bulk"), samples(registry, "score_one")
    assert len(expected) == len(BUCKETS) + 3  # the buckets, +Inf, _count, _sum
    assert got == pytest.approx(expected, rel=1e-6)
    assert got[("_count", (("version", "1"),))] == len(values)
