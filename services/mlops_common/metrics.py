"""The Prometheus registry each service exposes on its ``/metrics``.

A service registers its metrics in a registry of its own, not in prometheus_client's default one:
libraries register theirs in the default registry as a side effect of an import (Feast's
``feast_feature_server_*`` metrics appear on the first online-store read or materialization), and
those would then be exported by a process that runs no such server.
"""

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def service_registry() -> CollectorRegistry:
    """A registry with the process, platform and GC metrics the default registry would carry."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
