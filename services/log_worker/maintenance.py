"""``python -m log_worker.maintenance``: keep the inference-log and ground-truth tables fast and small.

Each merge of the log worker adds a small data file per partition it touches; reads and merges slow
down as they pile up (``../shared/notes/log-table-on-this-machine.md``: a merge into 500 small files
takes ~9x longer than into 10). For each table this command, in order:

1. compacts the small files of each partition into large ones (``optimize.compact``; the rows and
   their versions stay the same, readers never see a partial state: it is one commit);
2. writes a checkpoint, so readers replay fewer ``_delta_log`` entries;
3. vacuums: deletes the data files that no version younger than ``TABLE_RETENTION_DAYS`` references,
   and expires the log entries older than the table's log retention.

Safe while workers write: a compaction that loses a commit race is retried; a retention under one
day could delete the files of a merge in flight, so it needs ``--unsafe-retention`` (workers stopped).
The chart runs it as a CronJob (``logWorker.maintenance``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from deltalake import DeltaTable, WriterProperties
from deltalake.exceptions import TableNotFoundError

from log_worker.settings import Settings
from mlops_common.delta import MERGE_ATTEMPTS, delta_storage_options, retry_lost_commits
from mlops_common.inference_log import TABLE_WRITER_PROPERTIES

_MIN_SAFE_RETENTION_DAYS = 1.0


@dataclass(frozen=True)
class MaintenanceReport:
    uri: str
    files_before: int
    files_after: int
    rows: int
    vacuumed: int

    def __str__(self) -> str:
        return (
            f"{self.uri}: {self.rows} rows; data files {self.files_before} -> {self.files_after} (compacted); "
            f"{self.vacuumed} unreferenced files deleted"
        )


def maintain_table(
    uri: str, options: dict[str, str], retention_days: float, writer_properties: WriterProperties | None = None
) -> MaintenanceReport | None:
    """Compact, checkpoint and vacuum one table; None if there is no table at ``uri`` yet. The compacted
    files are encoded by ``writer_properties``, as the table's writer encodes its own."""
    try:
        table = DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return None
    files_before = len(table.file_uris())
    retry_lost_commits(
        uri, options, lambda fresh: fresh.optimize.compact(writer_properties=writer_properties), MERGE_ATTEMPTS
    )
    table = DeltaTable(uri, storage_options=options)
    table.create_checkpoint()
    vacuumed = table.vacuum(retention_hours=int(retention_days * 24), dry_run=False, enforce_retention_duration=False)
    table.cleanup_metadata()
    table = DeltaTable(uri, storage_options=options)
    return MaintenanceReport(uri, files_before, len(table.file_uris()), table.count(), len(vacuumed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m log_worker.maintenance", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--retention-days",
        type=float,
        default=None,
        help="delete unreferenced data files older than this (default: TABLE_RETENTION_DAYS, 7)",
    )
    parser.add_argument(
        "--unsafe-retention",
        action="store_true",
        help=f"allow a retention under {_MIN_SAFE_RETENTION_DAYS:g} day (only with every writer stopped)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    retention = settings.table_retention_days if args.retention_days is None else args.retention_days
    if retention < 0:
        parser.error(f"--retention-days must be 0 or more, got {retention:g}")
    if retention < _MIN_SAFE_RETENTION_DAYS and not args.unsafe_retention:
        parser.error(
            f"--retention-days {retention:g} is under {_MIN_SAFE_RETENTION_DAYS:g} day: it could delete the files "
            "of a merge in flight; stop every writer and add --unsafe-retention"
        )
    options = delta_storage_options(settings)
    tables = ((settings.inference_log_table_uri, TABLE_WRITER_PROPERTIES), (settings.ground_truth_table_uri, None))
    for uri, writer_properties in tables:
        report = maintain_table(uri, options, retention, writer_properties)
        print(report if report is not None else f"{uri}: no table yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
