"""feature_store.bootstrap: raw CSVs into an empty raw bucket before the first ingestion, never over data
that is there. S3 is a stand-in client here; the upload itself is pipeline.upload_raw (integration-tested)."""

from pathlib import Path

import pandas as pd
import pytest
from botocore.exceptions import ClientError

from feature_store import bootstrap
from feature_store.settings import Settings
from mlops_common.raw_tables import RAW_TABLES


class Bucket:
    """head_object of a bucket holding `keys`; any other key answers S3's 404."""

    def __init__(self, keys: set[str], error: str = "404") -> None:
        self.keys, self.error = keys, error

    def head_object(self, Bucket: str, Key: str) -> dict:
        if Key not in self.keys:
            raise ClientError({"Error": {"Code": self.error}}, "HeadObject")
        return {}


@pytest.fixture
def settings() -> Settings:
    return Settings(raw_bucket="raw", raw_prefix="home-credit")


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, pd.DataFrame]]:
    """What pipeline.upload_raw was given: the CSVs of its folder, read back."""
    calls: list[dict[str, pd.DataFrame]] = []

    def upload(settings: Settings, data_dir: Path) -> list[str]:
        calls.append({t.filename: pd.read_csv(data_dir / t.filename) for t in RAW_TABLES})
        return [f"s3://{settings.raw_bucket}/{settings.raw_prefix}/{t.filename}" for t in RAW_TABLES]

    monkeypatch.setattr(bootstrap.pipeline, "upload_raw", upload)
    return calls


def test_an_empty_bucket_gets_synthetic_tables(settings: Settings, uploads: list) -> None:
    urls = bootstrap.bootstrap(settings, source="synthetic", applicants=200, client=Bucket(set()))
    assert urls == [f"s3://raw/home-credit/{t.filename}" for t in RAW_TABLES]
    [tables] = uploads
    train, test = tables["application_train.csv"], tables["application_test.csv"]
    assert len(train) + len(test) == 200
    assert "TARGET" in train.columns


def test_data_already_there_is_left_alone(settings: Settings, uploads: list) -> None:
    present = Bucket({f"home-credit/{t.filename}" for t in RAW_TABLES})
    for source in bootstrap.SOURCES:
        assert bootstrap.bootstrap(settings, source=source, url="https://example.invalid", client=present) == []
    assert uploads == []


def test_a_partial_snapshot_is_replaced_by_a_whole_one(settings: Settings, uploads: list) -> None:
    one = Bucket({"home-credit/bureau.csv"})
    assert bootstrap.missing_raw_tables(settings, one) == ["application_train.csv", "application_test.csv"]
    bootstrap.bootstrap(settings, source="synthetic", applicants=50, client=one)
    assert set(uploads[0]) == {t.filename for t in RAW_TABLES}


def test_source_none_says_what_to_upload(settings: Settings, uploads: list) -> None:
    with pytest.raises(FileNotFoundError, match=r"s3://raw/home-credit/: missing application_train.csv"):
        bootstrap.bootstrap(settings, source="none", client=Bucket(set()))
    assert uploads == []


def test_url_source_downloads_each_file(settings: Settings, uploads: list, tmp_path: Path) -> None:
    from synthetic_home_credit import generate

    generate(30).write(tmp_path)
    bootstrap.bootstrap(settings, source="url", url=tmp_path.as_uri() + "/", client=Bucket(set()))
    assert len(uploads[0]["application_train.csv"]) + len(uploads[0]["application_test.csv"]) == 30


def test_other_s3_errors_are_not_taken_for_absence(settings: Settings, uploads: list) -> None:
    with pytest.raises(ClientError):
        bootstrap.bootstrap(settings, source="synthetic", client=Bucket(set(), error="AccessDenied"))
    with pytest.raises(ValueError, match="needs --url"):
        bootstrap.bootstrap(settings, source="url", client=Bucket(set()))
