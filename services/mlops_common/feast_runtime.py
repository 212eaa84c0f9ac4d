"""Feast in the processes that only read feature definitions: the BFF's workers, batch scoring, the trainer.

Feast decorates its definition classes with typeguard's ``@typechecked``, and typeguard 4 implements it by
parsing and compiling again the source of each decorated function's module while Feast is imported: about
3 s per process on this machine (``benchmarks/results/startup.md``), paid by every BFF worker, scoring job and
trainer when it starts. These load the definitions from the registry and never build
them from user code, so the checks guard nothing there and Feast is imported with the decorator left out
(before any of their modules imports Feast: the trainer's and batch scoring's package ``__init__``, the BFF's
worker factory in ``bff.__main__``, which runs after the supervisor named the metrics directory). ``python -m
feature_store`` (``feast apply`` of the definitions) imports Feast as usual and keeps them.
"""

import importlib
import sys

import typeguard


def import_feast_without_typechecks() -> None:
    """Import Feast with ``@typechecked`` doing nothing (a no-op when Feast is already imported)."""
    if "feast" in sys.modules:
        return
    typechecked = typeguard.typechecked
    typeguard.typechecked = _unchecked
    try:
        importlib.import_module("feast")
    finally:
        typeguard.typechecked = typechecked


def _unchecked(target=None, **_options):
    """``@typechecked`` and ``@typechecked(...)`` that return what they decorate."""
    return _unchecked if target is None else target
