"""Training (``python -m trainer``)."""

from mlops_common.feast_runtime import import_feast_without_typechecks

# Before any module of this package imports Feast: see mlops_common.feast_runtime.
import_feast_without_typechecks()
