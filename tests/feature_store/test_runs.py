"""feature_store.runs: a completed run leaves a marker; the trainer's wait returns once it is there and
gives up after its timeout. S3 is a stand-in client (the real one is exercised by the integration tests)."""

import pytest
from botocore.exceptions import ClientError

from feature_store import runs
from feature_store.__main__ import main
from feature_store.settings import Settings


class Bucket:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
        self.objects[(Bucket, Key)] = Body

    def copy_object(self, Bucket: str, Key: str, CopySource: dict) -> None:
        self.objects[(Bucket, Key)] = self.objects[(CopySource["Bucket"], CopySource["Key"])]

    def delete_object(self, Bucket: str, Key: str) -> None:
        del self.objects[(Bucket, Key)]

    def head_object(self, Bucket: str, Key: str) -> dict:
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "404"}}, "HeadObject")
        return {}


@pytest.fixture
def settings() -> Settings:
    return Settings(offline_bucket="offline", offline_prefix="features")


def test_a_recorded_run_is_completed_and_another_is_not(settings: Settings) -> None:
    bucket = Bucket()
    assert runs.record_run(settings, "abc123", client=bucket) == "s3://offline/features/_runs/abc123"
    assert runs.run_completed(settings, "abc123", bucket)
    assert not runs.run_completed(settings, "def456", bucket)
    assert list(bucket.objects) == [("offline", "features/_runs/abc123")], "the staging copy is gone"


def test_wait_returns_when_the_run_completes_and_times_out_otherwise(settings: Settings) -> None:
    bucket, now = Bucket(), [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 30:
            runs.record_run(settings, "abc123", client=bucket)

    runs.wait_for_run(settings, "abc123", timeout_s=60, client=bucket, clock=lambda: now[0], sleep=sleep)
    assert now[0] == 30
    with pytest.raises(TimeoutError, match="def456 not completed after 60 s"):
        runs.wait_for_run(settings, "def456", timeout_s=60, client=bucket, clock=lambda: now[0], sleep=sleep)


def test_run_ids_cannot_leave_the_runs_folder(settings: Settings) -> None:
    with pytest.raises(ValueError, match="invalid run id"):
        runs.marker_key(settings, "../features/application.parquet")


def test_the_cli_waits_for_the_run_and_reports_a_timeout(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls = []

    def wait(settings: Settings, run_id: str, *, timeout_s: float) -> None:
        calls.append((run_id, timeout_s))
        raise TimeoutError(f"feature pipeline run {run_id} not completed after {timeout_s:.0f} s")

    monkeypatch.setattr(runs, "wait_for_run", wait)
    assert main(["wait-run", "--run-id", "abc123", "--timeout", "5"]) == 2
    assert calls == [("abc123", 5.0)]
    assert "not completed after 5 s" in capsys.readouterr().err
