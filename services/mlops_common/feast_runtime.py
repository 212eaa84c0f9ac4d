"""Feast in the jobs that only read feature definitions: batch scoring and the trainer.

Feast decorates its definition classes with typeguard's ``@typechecked``, and typeguard 4 implements it by
parsing and compiling again the source of each decorated function's module while Feast is imported: about
5 s of CPU per process on this machine (``python -X importtime -c "import feast"``), paid by every scoring job
and trainer when it starts. These jobs load the definitions from the registry and never build them from user
code, so the checks guard nothing there and Feast is imported with the decorator left out (by each package's
``__init__``, before any of its modules imports Feast). ``python -m feature_store`` (``feast apply`` of the
definitions) imports Feast as usual and keeps them.

Not the BFF: importing Feast opens prometheus-client's metric files, so its supervisor must first name the
directory the workers share (``bff.workers``), which a package ``__init__`` runs too early for.
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
