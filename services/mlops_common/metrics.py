"""The Prometheus registry each service exposes on its ``/metrics``.

A service registers its metrics in a registry of its own, not in prometheus_client's default one:
libraries register theirs in the default registry as a side effect of an import (Feast's
``feast_feature_server_*`` metrics appear on the first online-store read or materialization), and
those would then be exported by a process that runs no such server.
"""

import numpy as np
from prometheus_client import CollectorRegistry, GCCollector, Histogram, PlatformCollector, ProcessCollector


def service_registry() -> CollectorRegistry:
    """A registry with the process, platform and GC metrics the default registry would carry."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


# Fewer values than this are observed one by one, which costs less than numpy's fixed cost (a single
# prediction's score is one value).
_OBSERVE_EACH_BELOW = 8


def observe_all(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every value, in one pass: the bucket counts from numpy, one increment
    per bucket (a 256-row batch costs one call per bucket, not 256 observes). It adds to the same
    counters ``observe`` does (prometheus_client's bucket and sum values, multiprocess mode included);
    tests/mlops_common/test_metrics.py checks the result equals ``observe`` value by value."""
    if len(values) < _OBSERVE_EACH_BELOW:
        for value in values.tolist():
            histogram.observe(value)
        return
    histogram._raise_if_not_observable()
    bounds = np.asarray(histogram._upper_bounds)
    # observe() counts a value in the first bucket whose bound is >= the value.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(np.sum(values)))
