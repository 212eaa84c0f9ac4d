"""Feature pipeline steps: upload raw CSVs, ingest them into the offline store, apply, materialize.

Each step is safe to re-run: uploads and offline snapshots replace whole objects atomically, and
``feast apply`` / ``materialize`` converge to the same registry and online values.
"""

import io
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from credit_features import build, offline_path

from feature_store.settings import Settings
from feature_store.transform import application_features, bureau_features
from mlops_common.feast_store import open_feature_store
from mlops_common.features import ENTITY_KEY, EVENT_TIMESTAMP, FeatureGroup
from mlops_common.raw_tables import (
    APPLICATION_TEST,
    APPLICATION_TRAIN,
    BUREAU,
    RAW_TABLES,
    RawTable,
    read_raw_table,
)
from mlops_common.s3 import ensure_bucket, publish_atomically, s3_client, storage_options

log = logging.getLogger(__name__)


def raw_url(settings: Settings, table: RawTable) -> str:
    return f"s3://{settings.raw_bucket}/{settings.raw_prefix}/{table.filename}"


def read_raw(settings: Settings, table: RawTable) -> pd.DataFrame:
    return read_raw_table(table, raw_url(settings, table), storage_options=storage_options(settings))


def upload_raw(settings: Settings, data_dir: Path) -> list[str]:
    """Copy the raw CSVs from ``data_dir`` to the raw bucket, each published atomically."""
    missing = [t.filename for t in RAW_TABLES if not (data_dir / t.filename).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir}: missing {', '.join(missing)}; put the Kaggle files there or generate synthetic ones "
            "with `python data/synthetic_home_credit.py`"
        )
    client = s3_client(settings)
    ensure_bucket(client, settings.raw_bucket)
    urls = []
    for table in RAW_TABLES:
        key = f"{settings.raw_prefix}/{table.filename}"
        publish_atomically(client, settings.raw_bucket, key, (data_dir / table.filename).read_bytes())
        urls.append(f"s3://{settings.raw_bucket}/{key}")
        log.info("uploaded %s", urls[-1])
    return urls


def _publish_parquet(settings: Settings, client, frame: pd.DataFrame, group: FeatureGroup) -> str:
    url = offline_path(settings, group)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    publish_atomically(
        client,
        settings.offline_bucket,
        url.removeprefix(f"s3://{settings.offline_bucket}/"),
        buffer.getvalue(),
    )
    log.info("published %s (%d rows)", url, len(frame))
    return url


def ingest(settings: Settings, *, event_time: datetime | None = None) -> dict[FeatureGroup, pd.DataFrame]:
    """Raw CSVs in S3 -> validated -> feature tables -> Parquet snapshots in the offline store.

    All three tables are read and validated before anything is written, so a bad file leaves the
    offline store exactly as it was.
    """
    created_time = datetime.now(UTC)
    event_time = event_time or created_time
    train, test, bureau = (read_raw(settings, t) for t in (APPLICATION_TRAIN, APPLICATION_TEST, BUREAU))
    applications = pd.concat([train.drop(columns=["TARGET"]), test], ignore_index=True)
    tables = {
        FeatureGroup.APPLICATION: application_features(applications, event_time=event_time, created_time=created_time),
        FeatureGroup.BUREAU: bureau_features(
            bureau, applications[ENTITY_KEY], event_time=event_time, created_time=created_time
        ),
    }
    client = s3_client(settings)
    ensure_bucket(client, settings.offline_bucket)
    for group, frame in tables.items():
        _publish_parquet(settings, client, frame, group)
    return tables


def apply(settings: Settings) -> None:
    if "://" not in settings.feast_registry_path:
        Path(settings.feast_registry_path).parent.mkdir(parents=True, exist_ok=True)
    store = open_feature_store(settings)
    store.apply(build(settings).objects())
    log.info("feast apply: project %s, registry %s", settings.feast_project, settings.feast_registry_path)


def materialize(settings: Settings) -> None:
    """Load the latest offline values of every feature view into the online store."""
    started = time.perf_counter()
    store = open_feature_store(settings)
    start = _earliest_event_time(settings)
    store.materialize(start_date=start, end_date=datetime.now(UTC))
    log.info("materialized from %s in %.1f s", start.isoformat(), time.perf_counter() - started)


def _earliest_event_time(settings: Settings) -> datetime:
    earliest = None
    for group in FeatureGroup:
        times = pd.read_parquet(
            offline_path(settings, group),
            columns=[EVENT_TIMESTAMP],
            storage_options=storage_options(settings),
        )[EVENT_TIMESTAMP]
        if times.empty:
            raise ValueError(f"{offline_path(settings, group)}: no rows to materialize")
        first = times.min().to_pydatetime()
        earliest = first if earliest is None else min(earliest, first)
    return earliest


def run(settings: Settings, *, event_time: datetime | None = None) -> None:
    ingest(settings, event_time=event_time)
    apply(settings)
    materialize(settings)
