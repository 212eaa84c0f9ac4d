"""Jobs through the API and the job worker on the real stack: PostgreSQL, RabbitMQ, SeaweedFS, Triton serving
the session's champion, MLflow. A BFF, model sync and worker of this module's own (its own job queue).

* A scoring job writes its scores and the job shows where, with its progress; the worker counts it.
* A bad input path fails the job at once, with the job's own reason.
* A worker killed mid-job: the next worker retries it and exactly one complete output is published.
* A training job registers a version, tagged with its profile and job, and the job shows it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient
from scoring_tables import feature_table, output_keys, put_table, read_scores
from serving_fixtures import Serving, faults_env, start_serving

from devstack.components import app_daemon
from devstack.processes import Daemon, free_port
from mlops_common.features import ENTITY_KEY

pytestmark = pytest.mark.integration


@dataclass
class JobsPlatform:
    env: dict[str, str]
    serving: Serving
    logs: Path
    worker: Daemon | None = None

    def start_worker(self) -> Daemon:
        self.worker = app_daemon(
            "job_worker",
            "job_worker",
            self.logs / "job_worker.log",
            env=self.env,
            health=f"http://127.0.0.1:{self.env['JOB_WORKER_METRICS_PORT']}/metrics",
            die_with_parent=True,
        ).start()
        return self.worker

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.serving.bff_url, timeout=30)

    def wait(self, job_id: str, timeout_s: float = 180, until=lambda job: job["state"] in ("succeeded", "failed")):
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while time.monotonic() < deadline:
                job = client.get(f"/jobs/{job_id}").json()
                if until(job):
                    return job
                time.sleep(0.2)
        raise AssertionError(f"job {job_id} not there within {timeout_s:.0f} s: {job}")

    def metric(self, sample: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.env['JOB_WORKER_METRICS_PORT']}/metrics", timeout=5).text
        return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " "))


@pytest.fixture(scope="module")
def jobs(trained_platform, s3_server, unique_name, tmp_path_factory) -> Iterator[JobsPlatform]:
    work = tmp_path_factory.mktemp("jobs")
    env = faults_env(
        trained_platform,
        s3_server,
        unique_name,
        work,
        JOBS_QUEUE=unique_name("jobs"),
        JOB_WORKER_METRICS_PORT=str(free_port()),
        JOB_LOG_DIR=str(work / "job-logs"),
        JOB_STATS_INTERVAL_S="1",
        # Small chunks: the killed-worker test finds the job under way, with progress reported.
        BATCH_SCORING_CHUNK_ROWS="2000",
        BATCH_SCORING_IN_FLIGHT="1",
    )
    platform = JobsPlatform(env, start_serving(env, work), work)
    platform.start_worker()
    try:
        yield platform
    finally:
        if platform.worker is not None:
            platform.worker.stop()
        platform.serving.bff.stop()
        platform.serving.model_sync.stop()


def submit(jobs: JobsPlatform, path: str, body: dict) -> str:
    with jobs.client() as client:
        answer = client.post(path, json=body)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def test_a_scoring_job_writes_its_scores_and_shows_where(jobs, s3_server):
    bucket = s3_server.new_bucket("scoring")
    table = feature_table(700)
    table[ENTITY_KEY] = np.arange(700) + 600_000
    source = put_table(s3_server, bucket, "in/rows.parquet", table)
    succeeded_before = jobs.metric('job_worker_jobs_total{kind="score",outcome="succeeded"}')
    rows_before = jobs.metric("job_worker_rows_scored_total")

    job_id = submit(jobs, "/jobs/score", {"input": source, "output": f"s3://{bucket}/out"})
    job = jobs.wait(job_id)

    assert (job["state"], job["attempts"], job["error"]) == ("succeeded", 1, None), job
    assert job["result"]["output"] == f"s3://{bucket}/out/{job_id}.parquet"
    assert job["result"]["rows_scored"] == 700
    assert job["progress"]["rows_scored"] > 0
    scores = read_scores(s3_server, job["result"]["output"]).read().to_pandas()
    assert list(scores[ENTITY_KEY]) == list(table[ENTITY_KEY])
    assert set(scores["model_version"]) == {job["result"]["model_version"]}
    assert jobs.metric('job_worker_jobs_total{kind="score",outcome="succeeded"}') == succeeded_before + 1
    assert jobs.metric("job_worker_rows_scored_total") >= rows_before + job["progress"]["rows_scored"]


def test_a_bad_input_path_fails_the_job_at_once_with_its_reason(jobs, s3_server):
    bucket = s3_server.new_bucket("scoring")
    job_id = submit(jobs, "/jobs/score", {"input": f"s3://{bucket}/in/missing.parquet", "output": f"s3://{bucket}/out"})
    job = jobs.wait(job_id)
    assert (job["state"], job["attempts"]) == ("failed", 1), job
    assert job["error"] == f"exit code 2: batch_scoring: s3://{bucket}/in/missing.parquet: no such file"
    assert output_keys(s3_server, bucket) == []


def test_a_worker_killed_mid_job_is_retried_by_the_next_and_one_output_is_published(jobs, s3_server):
    bucket = s3_server.new_bucket("scoring")
    rows = 200_000
    source = put_table(s3_server, bucket, "in/many.parquet", feature_table(rows))
    job_id = submit(jobs, "/jobs/score", {"input": source, "output": f"s3://{bucket}/out"})

    jobs.wait(job_id, 60, until=lambda job: (job["progress"] or {}).get("rows_scored", 0) > 0)
    os.kill(jobs.worker.pid(), signal.SIGKILL)  # its job process gets SIGTERM as it goes (PR_SET_PDEATHSIG)
    jobs.worker = None
    time.sleep(1)
    assert output_keys(s3_server, bucket) == ["in/many.parquet"]

    jobs.start_worker()
    job = jobs.wait(job_id)
    assert (job["state"], job["attempts"]) == ("succeeded", 2), job
    assert output_keys(s3_server, bucket) == ["in/many.parquet", f"out/{job_id}.parquet"]
    assert read_scores(s3_server, job["result"]["output"]).metadata.num_rows == rows


def test_a_training_job_registers_a_version_and_the_job_shows_it(jobs):
    body = {"profile": "small", "hyperparameters": {"max_iter": 15}, "promote": False}
    job_id = submit(jobs, "/jobs/train", body)
    job = jobs.wait(job_id, timeout_s=300)
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["registered_model"] == jobs.env["REGISTERED_MODEL_NAME"]
    assert result["promoted"] is False
    version = MlflowClient(jobs.env["MLFLOW_TRACKING_URI"]).get_model_version(
        jobs.env["REGISTERED_MODEL_NAME"], result["version"]
    )
    assert version.tags["training_profile"] == "small"
    assert version.tags["job_id"] == job_id
