"""The batch-scoring job on the real stack: Triton serving the session's champion, SeaweedFS, Feast.

* Its scores are the API's for the same rows (same version), missing values included.
* As-of scoring joins the features as they were then: a value written later does not leak in.
* A run that fails (bad input, a dead Triton) publishes nothing; a rerun with the same id replaces.
"""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from credit_features import offline_path
from platform_fixtures import settings_from
from scoring_tables import feature_table, output_keys, put_table, read_scores

from batch_scoring.inputs import InputError
from batch_scoring.job import METADATA_KEY, JobSpec, run_job
from batch_scoring.settings import Settings
from devstack.processes import free_port
from feature_store.pipeline import apply
from feature_store.settings import Settings as PipelineSettings
from mlops_common.errors import DependencyUnavailableError
from mlops_common.features import CREATED_TIMESTAMP, ENTITY_KEY, EVENT_TIMESTAMP, FEATURE_NAMES, FeatureGroup
from mlops_common.s3 import storage_options

ROWS = 700  # several chunks of CHUNK_ROWS, several Triton calls per chunk
CHUNK_ROWS = 300


@pytest.fixture
def settings(serving) -> Settings:
    return settings_from(Settings, {**serving.env, "BATCH_SCORING_CHUNK_ROWS": str(CHUNK_ROWS)})


async def test_scores_equal_the_apis_for_the_same_rows_missing_values_included(serving, s3_server, settings):
    bucket = s3_server.new_bucket("scoring")
    table = feature_table(ROWS)
    table[ENTITY_KEY] = np.arange(ROWS) + 500_000
    source = put_table(s3_server, bucket, "in/rows.parquet", table)

    result = await run_job(JobSpec("same-as-api", f"s3://{bucket}/out", input=source), settings)

    scores = read_scores(s3_server, result.output).read().to_pandas()
    assert list(scores["row"]) == list(range(ROWS))
    assert list(scores[ENTITY_KEY]) == list(table[ENTITY_KEY])
    # The API, on the same rows without their ids (an id there would fill the missing values from the store),
    # an unknown value as null.
    answers = []
    async with httpx.AsyncClient(base_url=serving.bff_url, timeout=30) as client:
        for start in range(0, ROWS, 256):
            body = [
                {k: None if pd.isna(v) else v for k, v in row.items()}
                for row in table[list(FEATURE_NAMES)].iloc[start : start + 256].to_dict("records")
            ]
            answer = await client.post("/predict/batch", json=body)
            assert answer.status_code == 200, answer.text
            answers += answer.json()["predictions"]
    assert [a["probability"] for a in answers] == scores["probability"].tolist()
    assert [a["decision"] for a in answers] == scores["decision"].tolist()
    assert {a["model_version"] for a in answers} == set(scores["model_version"]) == {result.model_version}
    assert result.rows_scored == ROWS
    summary = json.loads(read_scores(s3_server, result.output).metadata.metadata[METADATA_KEY])
    assert summary["rows_scored"] == ROWS
    assert summary["input"] == source


def test_the_cli_scores_a_csv_and_a_rerun_with_the_same_id_replaces_its_output(serving, s3_server):
    bucket = s3_server.new_bucket("scoring")
    first = put_table(s3_server, bucket, "in/first.csv", feature_table(40, seed=1), csv=True)
    second = put_table(s3_server, bucket, "in/second.csv", feature_table(30, seed=2), csv=True)

    def score(source: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "batch_scoring",
                "--input",
                source,
                "--output",
                f"s3://{bucket}/out",
                "--job-id",
                "nightly",
            ],
            env=serving.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = score(first)
    assert done.returncode == 0, done.stderr
    assert "scored 40 rows" in done.stdout
    again = score(second)
    assert again.returncode == 0, again.stderr
    assert [k for k in output_keys(s3_server, bucket) if k.startswith("out/")] == ["out/nightly.parquet"]
    assert read_scores(s3_server, f"s3://{bucket}/out/nightly.parquet").metadata.num_rows == 30


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns=["AMT_CREDIT"]), "missing column(s) AMT_CREDIT"),
        (lambda t: t.assign(AMT_ANNUITY=t["AMT_ANNUITY"].astype(str)), "column AMT_ANNUITY holds string, not numbers"),
        (
            lambda t: t.assign(DAYS_BIRTH=np.where(t.index == 123, np.inf, t["DAYS_BIRTH"])),
            "column DAYS_BIRTH, row 123",
        ),
        (lambda t: t.assign(SK_ID_CURR=np.where(t.index == 7, -1, t.index)), "column SK_ID_CURR, row 7: -1 is outside"),
    ],
    ids=["missing column", "text column", "infinity", "negative id"],
)
async def test_bad_input_fails_naming_the_column_and_row_and_publishes_nothing(s3_server, settings, change, message):
    bucket = s3_server.new_bucket("scoring")
    source = put_table(s3_server, bucket, "in/rows.parquet", change(feature_table(200)))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await run_job(JobSpec("bad", f"s3://{bucket}/out", input=source), settings)
    assert output_keys(s3_server, bucket) == ["in/rows.parquet"]


async def test_a_missing_input_and_a_dead_triton_fail_with_their_reason(s3_server, settings):
    bucket = s3_server.new_bucket("scoring")
    with pytest.raises(InputError, match="no such file"):
        await run_job(JobSpec("absent", f"s3://{bucket}/out", input=f"s3://{bucket}/nothing.parquet"), settings)
    source = put_table(s3_server, bucket, "in/rows.parquet", feature_table(10))
    nowhere = settings.model_copy(update={"triton_http_url": f"127.0.0.1:{free_port()}", "triton_timeout_s": 2.0})
    with pytest.raises(DependencyUnavailableError, match="triton"):
        await run_job(JobSpec("no-triton", f"s3://{bucket}/out", input=source), nowhere)
    assert output_keys(s3_server, bucket) == ["in/rows.parquet"]


async def test_as_of_scoring_uses_the_features_of_that_time_not_later_ones(
    serving, trained_platform, s3_server, settings, tmp_path
):
    """An offline store of its own: three applicants known at t0, one of them changed at t1 (a far
    higher credit), one known only from t1. Scored as of a time between, the change must not show."""
    pipeline = settings_from(PipelineSettings, trained_platform.env)
    options = storage_options(pipeline)
    t0 = datetime(2026, 1, 10, tzinfo=UTC)
    t1 = t0 + timedelta(days=30)
    tables = {group: pd.read_parquet(offline_path(pipeline, group), storage_options=options) for group in FeatureGroup}
    ids = sorted(set(tables[FeatureGroup.APPLICATION][ENTITY_KEY]) & set(tables[FeatureGroup.BUREAU][ENTITY_KEY]))[:4]
    changed, late = ids[0], ids[3]
    own = pipeline.model_copy(
        update={"offline_bucket": s3_server.new_bucket("offline"), "feast_registry_path": str(tmp_path / "registry.db")}
    )
    for group, table in tables.items():
        rows = table[table[ENTITY_KEY].isin(ids)].assign(**{EVENT_TIMESTAMP: t0, CREATED_TIMESTAMP: t0})
        later = rows[rows[ENTITY_KEY].isin([changed, late])].assign(**{EVENT_TIMESTAMP: t1, CREATED_TIMESTAMP: t1})
        if group is FeatureGroup.APPLICATION:
            later = later.assign(AMT_CREDIT=later["AMT_CREDIT"] * 20, AMT_ANNUITY=later["AMT_ANNUITY"] * 20)
        rows = pd.concat([rows[rows[ENTITY_KEY] != late], later])
        bucket, _, key = offline_path(own, group).removeprefix("s3://").partition("/")
        put_table(s3_server, bucket, key, rows)
    apply(own)
    scoring = settings.model_copy(
        update={"offline_bucket": own.offline_bucket, "feast_registry_path": own.feast_registry_path}
    )
    out = s3_server.new_bucket("scores")

    async def scores_as_of(when: datetime) -> pd.DataFrame:
        result = await run_job(JobSpec(f"as-of-{when:%Y%m%d}", f"s3://{out}/as-of", as_of=when), scoring)
        return read_scores(s3_server, result.output).read().to_pandas().set_index(ENTITY_KEY)

    between = await scores_as_of(t0 + timedelta(days=1))
    after = await scores_as_of(t1 + timedelta(days=1))
    assert set(between.index) == set(ids[:3])  # the late applicant was unknown then: not scored
    assert set(after.index) == set(ids)
    assert between.loc[ids[1], "probability"] == after.loc[ids[1], "probability"]
    assert between.loc[changed, "probability"] != after.loc[changed, "probability"]

    # The same applicants' t0 values, scored as feature rows, give the between-times scores.
    rows = pd.concat(
        [tables[g][tables[g][ENTITY_KEY].isin(ids[:3])].set_index(ENTITY_KEY) for g in FeatureGroup], axis=1
    )[list(FEATURE_NAMES)].reset_index()
    source = put_table(s3_server, out, "in/t0.parquet", rows)
    direct = await run_job(JobSpec("t0-rows", f"s3://{out}/direct", input=source), settings)
    direct_scores = read_scores(s3_server, direct.output).read().to_pandas().set_index(ENTITY_KEY)
    for applicant in ids[:3]:
        assert direct_scores.loc[applicant, "probability"] == between.loc[applicant, "probability"]


def test_a_run_killed_midway_publishes_nothing_and_its_rerun_one_complete_output(serving, s3_server):
    bucket = s3_server.new_bucket("scoring")
    rows = 60_000
    source = put_table(s3_server, bucket, "in/rows.parquet", feature_table(rows))
    argv = [sys.executable, "-m", "batch_scoring", "--input", source, "--output", f"s3://{bucket}/out"]
    argv += ["--job-id", "killed", "--chunk-rows", "2000", "--in-flight", "1"]
    run = subprocess.Popen(argv, env=serving.env, stderr=subprocess.PIPE, text=True)
    try:
        for line in run.stderr:  # killed once its first chunks are scored, long before its last
            if "rows scored" in line:
                break
        run.kill()
    finally:
        run.wait(30)
    assert run.returncode == -9
    assert output_keys(s3_server, bucket) == ["in/rows.parquet"]

    rerun = subprocess.run(argv, env=serving.env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert output_keys(s3_server, bucket) == ["in/rows.parquet", "out/killed.parquet"]
    scores = read_scores(s3_server, f"s3://{bucket}/out/killed.parquet").read().to_pandas()
    assert list(scores["row"]) == list(range(rows))
