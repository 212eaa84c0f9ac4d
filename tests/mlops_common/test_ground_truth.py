"""The ground-truth table on a real SeaweedFS: upserts that settle on the newest outcome, and label
files validated row by row before anything is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devstack.components import S3Server
from mlops_common.ground_truth import (
    MAX_LABELS_PER_WRITE,
    GroundTruthStoreSettings,
    Label,
    LabelFileError,
    load_labels,
    read_label_file,
    write_labels,
)

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def label_store(s3_server: S3Server) -> GroundTruthStoreSettings:
    bucket = s3_server.new_bucket("labels")
    return GroundTruthStoreSettings(**s3_server.settings().model_dump(), logs_bucket=bucket)


def outcomes(settings: GroundTruthStoreSettings) -> dict[int, tuple[int, datetime]]:
    table = load_labels(settings)
    assert table.num_rows == pa.compute.count_distinct(table["applicant_id"]).as_py(), "an applicant twice"
    return {row["applicant_id"]: (row["outcome"], row["observed_at"]) for row in table.to_pylist()}


@pytest.mark.integration
def test_labels_upsert_to_the_newest_observation(label_store):
    assert load_labels(label_store).num_rows == 0
    first = [Label(applicant_id=i, outcome=0, observed_at=T0) for i in (1, 2, 3)]
    assert write_labels(label_store, first) == {"inserted": 3, "updated": 0, "unchanged": 0}
    # Replayed: nothing changes but nothing is duplicated either (same observation time: rewritten).
    assert write_labels(label_store, first)["inserted"] == 0
    later = Label(applicant_id=1, outcome=1, observed_at=T0 + timedelta(days=30))
    older = Label(applicant_id=2, outcome=1, observed_at=T0 - timedelta(days=1))
    new = Label(applicant_id=4, outcome=1, observed_at=T0)
    assert write_labels(label_store, [later, older, new]) == {"inserted": 1, "updated": 1, "unchanged": 1}
    assert outcomes(label_store) == {
        1: (1, T0 + timedelta(days=30)),
        2: (0, T0),  # the older observation did not replace the stored one
        3: (0, T0),
        4: (1, T0),
    }
    # Within one batch the newest observation of an applicant wins, the last copy on a tie.
    newest_first = [
        Label(applicant_id=5, outcome=1, observed_at=T0 + timedelta(days=1)),
        Label(applicant_id=5, outcome=0, observed_at=T0),
        Label(applicant_id=6, outcome=1, observed_at=T0),
        Label(applicant_id=6, outcome=0, observed_at=T0),
    ]
    write_labels(label_store, newest_first)
    assert outcomes(label_store)[5] == (1, T0 + timedelta(days=1))
    assert outcomes(label_store)[6] == (0, T0)


def test_too_many_labels_in_one_write_are_refused_before_any_io():
    labels = [Label(applicant_id=1, outcome=0, observed_at=T0)] * (MAX_LABELS_PER_WRITE + 1)
    with pytest.raises(ValueError, match="at most"):
        write_labels(GroundTruthStoreSettings(s3_endpoint_url="http://127.0.0.1:1"), labels)


def test_label_files_are_validated_row_by_row(tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text(
        "applicant_id,outcome,observed_at\n100002,1,2026-06-01T12:00:00Z\n100003,0,2026-06-02T00:00:00+02:00\n"
    )
    labels = read_label_file(good)
    assert [(label.applicant_id, label.outcome) for label in labels] == [(100002, 1), (100003, 0)]
    assert labels[1].observed_at == datetime(2026, 6, 1, 22, tzinfo=UTC)

    bad = tmp_path / "bad.csv"
    bad.write_text("applicant_id,outcome,observed_at\n100002,1,2026-06-01T12:00:00Z\n100003,2,2026-06-01\n")
    with pytest.raises(LabelFileError, match=r"bad.csv: line 3: outcome: .*less than or equal to 1; observed_at"):
        read_label_file(bad)

    missing = tmp_path / "missing.csv"
    missing.write_text("applicant_id,outcome\n1,0\n")
    with pytest.raises(LabelFileError, match=r"missing columns \['observed_at'\]"):
        read_label_file(missing)

    parquet = tmp_path / "labels.parquet"
    pq.write_table(
        pa.table({"applicant_id": [7], "outcome": [1], "observed_at": pa.array([T0], pa.timestamp("us", tz="UTC"))}),
        parquet,
    )
    assert read_label_file(parquet) == [Label(applicant_id=7, outcome=1, observed_at=T0)]

    with pytest.raises(LabelFileError, match=r"expected a \.csv or \.parquet"):
        read_label_file(tmp_path / "labels.json")
    with pytest.raises(LabelFileError, match="cannot read"):
        read_label_file(tmp_path / "absent.csv")
