"""``python -m log_worker.maintenance`` on a real SeaweedFS: many small commits compacted into a few
files, unreferenced files vacuumed, every row still there once (read by DuckDB), and the retention guard."""

from __future__ import annotations

import pytest
from log_pipeline import LogSetup, make_record, table_request_ids

from log_worker import maintenance
from mlops_common.ground_truth import Label, write_labels
from mlops_common.inference_log import open_inference_log_table, records_to_table, write_inference_log_rows

pytestmark = pytest.mark.integration


def parquet_keys(setup: LogSetup) -> list[str]:
    pages = setup.s3.client().get_paginator("list_objects_v2").paginate(Bucket=setup.bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]


def test_maintenance_compacts_and_vacuums_without_losing_or_repeating_a_row(log_setup: LogSetup, monkeypatch, capsys):
    settings = log_setup.worker_settings()
    open_inference_log_table(settings)
    records = [make_record() for _ in range(120)]
    for start in range(0, len(records), 10):  # 12 merges: 12 small files in one partition
        write_inference_log_rows(settings, records_to_table(records[start : start + 10]))
    labels = [Label(applicant_id=i, outcome=i % 2, observed_at=records[0].timestamp) for i in range(5)]
    for label in labels:
        write_labels(settings, [label])
    for key, value in log_setup.worker_env().items():
        monkeypatch.setenv(key, value)
    objects_before = len(parquet_keys(log_setup))

    with pytest.raises(SystemExit):
        maintenance.main(["--retention-days", "0.5"])
    assert "--unsafe-retention" in capsys.readouterr().err

    # No writer runs here, so a zero retention is safe: the compacted-away files go at once.
    assert maintenance.main(["--retention-days", "0", "--unsafe-retention"]) == 0
    logs_report, labels_report = capsys.readouterr().out.splitlines()
    assert logs_report.startswith(f"{settings.inference_log_table_uri}: 120 rows; data files 12 -> 1 (compacted); ")
    assert labels_report.startswith(f"{settings.ground_truth_table_uri}: 5 rows; data files ")
    ids = table_request_ids(log_setup)
    assert len(ids) == len(set(ids)) == 120
    assert set(ids) == {r.request_id for r in records}
    assert len(parquet_keys(log_setup)) < objects_before
