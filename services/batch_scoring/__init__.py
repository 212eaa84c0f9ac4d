"""Batch scoring: a whole table of applicants through the served model, in chunks, into one Parquet
file in S3 that appears complete or not at all. ``python -m batch_scoring --help``."""

from mlops_common.feast_runtime import import_feast_without_typechecks

# Before any module of this package imports Feast: see mlops_common.feast_runtime.
import_feast_without_typechecks()
