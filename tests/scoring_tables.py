"""Tables for the scoring tests (the batch-scoring job, the jobs API): applicant-like feature rows in S3,
and the scores a job wrote."""

import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mlops_common.features import FEATURE_NAMES


def feature_table(rows: int, seed: int = 11) -> pd.DataFrame:
    """Applicant-like rows; every fifth value of a column missing (NaN), in a different row per column."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "AMT_INCOME_TOTAL": rng.uniform(3e4, 4e5, rows),
            "AMT_CREDIT": rng.uniform(5e4, 2e6, rows),
            "AMT_ANNUITY": rng.uniform(2e3, 9e4, rows),
            "DAYS_BIRTH": rng.integers(-25_000, -7_000, rows).astype(float),
            "DAYS_EMPLOYED": rng.integers(-15_000, 0, rows).astype(float),
            "bureau_credit_count": rng.integers(0, 12, rows).astype(float),
            "bureau_credit_active_count": rng.integers(0, 5, rows).astype(float),
            "bureau_credit_days_enddate_mean": rng.uniform(-2_000, 2_000, rows),
            "bureau_amt_credit_sum": rng.uniform(0, 3e6, rows),
            "bureau_amt_credit_sum_overdue": rng.uniform(0, 1e4, rows),
        }
    )
    for j, name in enumerate(FEATURE_NAMES):
        table.loc[table.index % 5 == j % 5, name] = np.nan
    return table


def put_table(s3_server, bucket: str, key: str, table: pd.DataFrame, *, csv: bool = False) -> str:
    body = io.BytesIO()
    table.to_csv(body, index=False) if csv else table.to_parquet(body, index=False)
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=body.getvalue())
    return f"s3://{bucket}/{key}"


def read_scores(s3_server, uri: str) -> pq.ParquetFile:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return pq.ParquetFile(io.BytesIO(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()))


def output_keys(s3_server, bucket: str) -> list[str]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))
