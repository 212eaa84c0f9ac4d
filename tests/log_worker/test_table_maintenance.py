"""``python -m log_worker.maintenance`` on a real SeaweedFS: many small commits compacted into a few
files, unreferenced files vacuumed, every row still there once (read by DuckDB), and the retention guard."""

from __future__ import annotations

import io
import uuid

import pyarrow.parquet as pq
import pytest
from log_pipeline import LogSetup, make_record, table_request_ids

from log_worker import maintenance
from mlops_common.delta import delta_storage_options
from mlops_common.ground_truth import Label, write_labels
from mlops_common.inference_log import (
    TABLE_WRITER_PROPERTIES,
    open_inference_log_table,
    records_to_table,
    write_inference_log_rows,
)

pytestmark = pytest.mark.integration


def parquet_keys(setup: LogSetup) -> list[str]:
    pages = setup.s3.client().get_paginator("list_objects_v2").paginate(Bucket=setup.bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]


def dictionary_bytes(setup: LogSetup, key: str) -> dict[str, int]:
    """Each column's dictionary page in the first row group of a data file, in bytes (0: none)."""
    body = setup.s3.client().get_object(Bucket=setup.bucket, Key=key)["Body"].read()
    row_group = pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0)
    columns = (row_group.column(i) for i in range(row_group.num_columns))
    return {
        column.path_in_schema.split(".")[0]: column.data_page_offset - column.dictionary_page_offset
        if column.has_dictionary_page
        else 0
        for column in columns
    }


def test_a_column_of_distinct_values_gives_up_its_dictionary_early_in_merges_and_compaction(log_setup: LogSetup):
    """A dictionary of 1,000 distinct request ids saves nothing and costs the writer CPU: it stops at 8 KiB,
    while the decisions' stays whole."""
    settings = log_setup.worker_settings()
    open_inference_log_table(settings)
    for _ in range(2):
        write_inference_log_rows(settings, records_to_table([make_record(uuid.uuid4().hex) for _ in range(1000)]))
    written = parquet_keys(log_setup)
    assert len(written) == 2
    for key in written:
        dictionaries = dictionary_bytes(log_setup, key)
        assert 0 < dictionaries["request_id"] < 9 * 1024
        assert dictionaries["decision"] > 0

    report = maintenance.maintain_table(
        settings.inference_log_table_uri,
        delta_storage_options(settings),
        retention_days=0,
        writer_properties=TABLE_WRITER_PROPERTIES,
    )
    assert report is not None
    (compacted,) = (key for key in parquet_keys(log_setup) if "/_delta_log/" not in key)
    dictionaries = dictionary_bytes(log_setup, compacted)
    assert 0 < dictionaries["request_id"] < 9 * 1024
    assert dictionaries["decision"] > 0


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
