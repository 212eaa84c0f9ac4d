"""Completed pipeline runs, recorded in the offline store, for whoever must wait for one.

The chart's feature-pipeline Job passes `--run-id <hash of its inputs>` to `python -m feature_store run`; once
ingestion, `feast apply` and materialization succeeded, a marker object `<OFFLINE_PREFIX>/_runs/<id>` appears.
The trainer Job's init container (`python -m feature_store wait-run --run-id <same id>`) waits for it, so a
plain `helm install`, which starts every Job at once, trains on the features of this very run, never on none
or on an older snapshot's.
"""

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from feature_store.settings import Settings
from mlops_common.s3 import publish_atomically, s3_client

log = logging.getLogger(__name__)

_ABSENT = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def marker_key(settings: Settings, run_id: str) -> str:
    if not run_id or "/" in run_id:
        raise ValueError(f"invalid run id {run_id!r}")
    return f"{settings.offline_prefix}/_runs/{run_id}"


def record_run(settings: Settings, run_id: str, client=None) -> str:
    """Mark the run `run_id` complete; returns the marker's URL."""
    key = marker_key(settings, run_id)
    body = datetime.now(UTC).isoformat().encode()
    publish_atomically(client or s3_client(settings), settings.offline_bucket, key, body)
    log.info("run %s recorded at s3://%s/%s", run_id, settings.offline_bucket, key)
    return f"s3://{settings.offline_bucket}/{key}"


def run_completed(settings: Settings, run_id: str, client) -> bool:
    try:
        client.head_object(Bucket=settings.offline_bucket, Key=marker_key(settings, run_id))
    except ClientError as err:
        if str(err.response.get("Error", {}).get("Code")) in _ABSENT:
            return False
        raise
    return True


def wait_for_run(
    settings: Settings,
    run_id: str,
    *,
    timeout_s: float,
    poll_s: float = 10.0,
    client=None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once the run `run_id` completed; TimeoutError after `timeout_s`."""
    client = client or s3_client(settings)
    deadline = clock() + timeout_s
    while not run_completed(settings, run_id, client):
        if clock() >= deadline:
            raise TimeoutError(f"feature pipeline run {run_id} not completed after {timeout_s:.0f} s")
        log.info("waiting for feature pipeline run %s", run_id)
        sleep(poll_s)
    log.info("feature pipeline run %s completed", run_id)
