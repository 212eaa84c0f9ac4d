"""Raw data in the raw bucket before the first ingestion (`python -m feature_store bootstrap`).

A fresh install has empty buckets: the feature pipeline's Job runs this first (an init container). It does
nothing when the three raw CSVs are already under RAW_BUCKET/RAW_PREFIX (real data uploaded by a user, or an
earlier bootstrap); otherwise it puts them there from the source it is given: `synthetic` (the generator of
data/synthetic_home_credit.py), `url` (`<url>/<file>` for each of the three files, e.g. a bucket's HTTPS
address or a mirror), or `none` (only check, and fail with what to upload).
"""

import logging
import tempfile
import urllib.request
from pathlib import Path

from botocore.exceptions import ClientError

from feature_store import pipeline
from feature_store.settings import Settings
from mlops_common.raw_tables import RAW_TABLES
from mlops_common.s3 import s3_client

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "url", "none")
_ABSENT = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def missing_raw_tables(settings: Settings, client) -> list[str]:
    """The raw CSVs not (yet) under RAW_BUCKET/RAW_PREFIX."""
    missing = []
    for table in RAW_TABLES:
        try:
            client.head_object(Bucket=settings.raw_bucket, Key=f"{settings.raw_prefix}/{table.filename}")
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) not in _ABSENT:
                raise
            missing.append(table.filename)
    return missing


def bootstrap(
    settings: Settings,
    *,
    source: str,
    applicants: int = 20_000,
    seed: int = 7,
    url: str = "",
    client=None,
) -> list[str]:
    """Upload the raw CSVs from `source` unless they are all there; returns the URLs written (empty: none)."""
    if source not in SOURCES:
        raise ValueError(f"unknown bootstrap source {source!r}; one of {', '.join(SOURCES)}")
    if source == "url" and not url:
        raise ValueError("the `url` source needs --url")
    missing = missing_raw_tables(settings, client or s3_client(settings))
    where = f"s3://{settings.raw_bucket}/{settings.raw_prefix}/"
    if not missing:
        log.info("the raw tables are in %s: nothing to bootstrap", where)
        return []
    if source == "none":
        raise FileNotFoundError(
            f"{where}: missing {', '.join(missing)}; upload the raw CSVs (`python -m feature_store upload`) "
            "or bootstrap them from `synthetic` data or a `url`"
        )
    with tempfile.TemporaryDirectory(prefix="raw-") as folder:
        work_dir = Path(folder)
        if source == "synthetic":
            from synthetic_home_credit import generate

            log.info("%s lacks %s: generating %d synthetic applicants", where, ", ".join(missing), applicants)
            generate(applicants, seed=seed).write(work_dir)
        else:
            for table in RAW_TABLES:
                source_url = f"{url.rstrip('/')}/{table.filename}"
                log.info("downloading %s", source_url)
                urllib.request.urlretrieve(source_url, work_dir / table.filename)
        # All three together: a half-present snapshot is replaced by one consistent set.
        return pipeline.upload_raw(settings, work_dir)
