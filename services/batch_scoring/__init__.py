"""Batch scoring: a whole table of applicants through the served model, in chunks, into one Parquet
file in S3 that appears complete or not at all. ``python -m batch_scoring --help``."""
