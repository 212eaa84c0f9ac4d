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


# One value (a single prediction) and a few are observed one by one, more in bulk with numpy.
@pytest.mark.parametrize("count", [1, 7, 8, 505])
def test_observe_all_equals_observe_one_by_one(count):
    rng = np.random.default_rng(5)
    # Values on the bounds (a bound belongs to its own bucket), beyond the last bound (+Inf), and random ones.
    edges = np.array([1.5, 0.1, 0.25, 1.0, 0.0], dtype=np.float32)
    values = np.concatenate([edges, rng.random(500, np.float32)])[:count]
    registry = CollectorRegistry()
    # A name of its own for each histogram and case: in multiprocess mode (a PROMETHEUS_MULTIPROC_DIR in the
    # environment) one name is one store, whatever the registry.
    one, bulk = f"score_one_{count}", f"score_bulk_{count}"
    by_one = Histogram(one, "h", ["version"], buckets=BUCKETS, registry=registry).labels("1")
    in_bulk = Histogram(bulk, "h", ["version"], buckets=BUCKETS, registry=registry).labels("1")
    for value in values.tolist():
        by_one.observe(value)
    observe_all(in_bulk, values)
    got, expected = samples(registry, bulk), samples(registry, one)
    assert len(expected) == len(BUCKETS) + 3  # the buckets, +Inf, _count, _sum
    assert got == pytest.approx(expected, rel=1e-6)
    assert got[("_count", (("version", "1"),))] == len(values)
