"""The feature pipeline against the real SeaweedFS, Feast registry and Redis online store."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from credit_features import offline_path
from platform_fixtures import ingest_tables, settings_from

from feature_store import pipeline
from feature_store.settings import Settings
from feature_store.transform import application_features, bureau_features
from mlops_common.feast_store import open_feature_store
from mlops_common.features import FEATURE_NAMES, FEATURE_SERVICE, FeatureGroup, feature_names
from mlops_common.raw_tables import RawDataError
from mlops_common.s3 import STAGING_PREFIX, s3_client, storage_options
from synthetic_home_credit import generate
from trainer.dataset import TrainingDataError, point_in_time_features

pytestmark = pytest.mark.integration


def online_rows(settings: Settings, ids: list[int]) -> pd.DataFrame:
    store = open_feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    rows = store.get_online_features(features=service, entity_rows=[{"SK_ID_CURR": i} for i in ids]).to_df()
    return rows.set_index("SK_ID_CURR")[list(FEATURE_NAMES)]


def test_online_store_serves_what_the_transforms_compute(trained_platform):
    settings = trained_platform.settings(Settings)
    tables = trained_platform.tables
    apps = pd.concat([tables.application_train.drop(columns="TARGET"), tables.application_test])
    now = datetime.now(UTC)
    expected = (
        application_features(apps, event_time=now, created_time=now)
        .merge(bureau_features(tables.bureau, apps.SK_ID_CURR, event_time=now, created_time=now), on="SK_ID_CURR")
        .set_index("SK_ID_CURR")[list(FEATURE_NAMES)]
    )
    ids = [*apps.SK_ID_CURR.iloc[:20], tables.application_test.SK_ID_CURR.iloc[0]]
    actual = online_rows(settings, ids)
    np.testing.assert_array_equal(actual.to_numpy(np.float32), expected.loc[ids].to_numpy(np.float32))


def test_rerunning_the_pipeline_is_safe(trained_platform):
    settings = trained_platform.settings(Settings)
    ids = trained_platform.tables.application_train.SK_ID_CURR.iloc[:5].tolist()
    before = online_rows(settings, ids)
    pipeline.run(settings)
    pd.testing.assert_frame_equal(online_rows(settings, ids), before)


def test_a_bad_csv_fails_by_name_and_leaves_the_offline_store_untouched(platform_env, feast_process_env, tmp_path):
    settings = ingest_tables(platform_env, generate(300, seed=5), tmp_path)
    client = s3_client(settings)
    key = offline_path(settings, FeatureGroup.BUREAU).removeprefix(f"s3://{settings.offline_bucket}/")
    etag = client.head_object(Bucket=settings.offline_bucket, Key=key)["ETag"]

    bureau = pd.read_csv(tmp_path / "bureau.csv").drop(columns=["AMT_CREDIT_SUM"])
    bureau.to_csv(tmp_path / "bureau.csv", index=False)
    pipeline.upload_raw(settings, tmp_path)
    with pytest.raises(
        RawDataError, match=rf"bureau.csv: missing required column\(s\) AMT_CREDIT_SUM \({len(bureau)} rows\)"
    ):
        pipeline.ingest(settings)

    assert client.head_object(Bucket=settings.offline_bucket, Key=key)["ETag"] == etag
    leftovers = client.list_objects_v2(Bucket=settings.offline_bucket, Prefix=STAGING_PREFIX).get("KeyCount", 0)
    assert leftovers == 0


def test_point_in_time_join_never_leaks_a_later_value(platform_env, feast_process_env):
    settings = settings_from(Settings, platform_env)
    t1, t2, t3, t4 = (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=d) for d in (0, 10, 20, 30))

    def snapshot(group: FeatureGroup, rows: list[tuple[int, datetime, float]]) -> None:
        frame = pd.DataFrame(
            {
                "SK_ID_CURR": [r[0] for r in rows],
                **{name: np.float32([r[2] for r in rows]) for name in feature_names(group)},
                "event_timestamp": [r[1] for r in rows],
                "created_timestamp": [r[1] for r in rows],
            }
        )
        frame.to_parquet(offline_path(settings, group), storage_options=storage_options(settings))

    # Applicant 1 changes between t1 and t3; applicant 2 only appears at t3.
    snapshot(FeatureGroup.APPLICATION, [(1, t1, 100.0), (1, t3, 300.0), (2, t3, 7.0)])
    snapshot(FeatureGroup.BUREAU, [(1, t1, 1.0), (1, t3, 3.0), (2, t3, 7.0)])
    pipeline.apply(settings)
    store = open_feature_store(settings)

    labels = pd.DataFrame({"SK_ID_CURR": [1, 1], "TARGET": [0, 1], "event_timestamp": [t2, t4]})
    joined = point_in_time_features(store, labels)
    assert joined.AMT_CREDIT.tolist() == [100.0, 300.0]  # at t2 the t3 value did not exist yet
    assert joined.bureau_credit_count.tolist() == [1.0, 3.0]
    assert joined.TARGET.tolist() == [0, 1]

    too_early = pd.DataFrame({"SK_ID_CURR": [1, 2], "TARGET": [0, 1], "event_timestamp": [t2, t2]})
    with pytest.raises(TrainingDataError, match=r"1 of 2 labelled applicants have no feature values .*SK_ID_CURR=2"):
        point_in_time_features(store, too_early)
