"""The raw Home Credit tables the platform reads, their required columns, and a validating reader.

Only the columns the platform uses are required; the real Kaggle files carry many more and pass.
Every problem is reported with the file, the column and the row count, so a bad upload is fixed
at the source instead of surfacing later as a skewed feature.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd

from mlops_common.features import ENTITY_KEY, LABEL


class Kind(StrEnum):
    INTEGER = "integer"
    NUMBER = "number"  # float; empty cells are allowed and become NaN
    TEXT = "text"


@dataclass(frozen=True)
class RawTable:
    filename: str
    columns: dict[str, Kind]
    # Columns that must never be empty (keys, labels); other numeric columns may have gaps.
    not_null: tuple[str, ...] = ()


APPLICATION_COLUMNS = {
    ENTITY_KEY: Kind.INTEGER,
    "AMT_INCOME_TOTAL": Kind.NUMBER,
    "AMT_CREDIT": Kind.NUMBER,
    "AMT_ANNUITY": Kind.NUMBER,
    "DAYS_BIRTH": Kind.NUMBER,
    "DAYS_EMPLOYED": Kind.NUMBER,
}
APPLICATION_TRAIN = RawTable(
    "application_train.csv", {**APPLICATION_COLUMNS, LABEL: Kind.INTEGER}, not_null=(ENTITY_KEY, LABEL)
)
APPLICATION_TEST = RawTable("application_test.csv", APPLICATION_COLUMNS, not_null=(ENTITY_KEY,))
BUREAU = RawTable(
    "bureau.csv",
    {
        ENTITY_KEY: Kind.INTEGER,
        "SK_ID_BUREAU": Kind.INTEGER,
        "CREDIT_ACTIVE": Kind.TEXT,
        "DAYS_CREDIT_ENDDATE": Kind.NUMBER,
        "AMT_CREDIT_SUM": Kind.NUMBER,
        "AMT_CREDIT_SUM_OVERDUE": Kind.NUMBER,
    },
    not_null=(ENTITY_KEY, "SK_ID_BUREAU"),
)
RAW_TABLES = (APPLICATION_TRAIN, APPLICATION_TEST, BUREAU)


class RawDataError(ValueError):
    """A raw table cannot be used; the message names the file, the column and the row count."""


def read_raw_table(table: RawTable, source: str, *, storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read the required columns of ``table`` from ``source`` (a path or s3:// URL), validated and typed."""
    name = table.filename
    try:
        header = pd.read_csv(source, nrows=0, storage_options=storage_options)
    except pd.errors.EmptyDataError as err:
        raise RawDataError(f"{name}: the file is empty (no header, 0 rows)") from err
    except FileNotFoundError as err:
        raise RawDataError(f"{name}: not found at {source}") from err
    missing = [column for column in table.columns if column not in header.columns]
    # Text everywhere first, so that an unparseable cell can be reported instead of guessed at.
    frame = pd.read_csv(
        source,
        usecols=[c for c in table.columns if c in header.columns],
        dtype=str,
        storage_options=storage_options,
    )
    if missing:
        raise RawDataError(f"{name}: missing required column(s) {', '.join(missing)} ({len(frame)} rows)")
    if frame.empty:
        raise RawDataError(f"{name}: no data rows (header only, 0 rows)")

    typed = {}
    for column, kind in table.columns.items():
        text = frame[column]
        if kind is Kind.TEXT:
            typed[column] = text
            continue
        values = pd.to_numeric(text.str.strip(), errors="coerce")
        bad = values.isna() & text.notna()
        if kind is Kind.INTEGER:
            bad |= values.notna() & (values % 1 != 0)
        if bad.any():
            first = int(bad.to_numpy().argmax())
            raise RawDataError(
                f"{name}: column {column} has {int(bad.sum())} unparseable {kind} value(s) of {len(frame)} rows "
                f"(first at data row {first + 1}: {text.iloc[first]!r})"
            )
        typed[column] = values
    result = pd.DataFrame(typed)
    for column in table.not_null:
        nulls = int(result[column].isna().sum())
        if nulls:
            raise RawDataError(f"{name}: column {column} is empty in {nulls} of {len(result)} rows")
        if table.columns[column] is Kind.INTEGER:
            result[column] = result[column].astype("int64")
    return result
