"""The worker's retry rules on a real PostgreSQL database and RabbitMQ queue, each attempt a real process
that exits with the code a job would (3: a dependency was down, retried; 2: a bad request, failed at once).
The real jobs (batch scoring, training) under the worker: test_job_worker_integration.py."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from pydantic import SecretStr

from job_worker.runners import JobLaunch, LocalRun
from job_worker.settings import Settings
from job_worker.worker import JobWorker
from mlops_common.jobs import Job, JobKind, JobState, JobStore, ScoreJobRequest
from mlops_common.rabbit import declare_job_queue, job_message

REQUEST = ScoreJobRequest(input="s3://bucket/rows.parquet", output="s3://bucket/scores")


class ExitingRunner:
    """Each attempt a process that prints a line and exits with the next of ``codes``."""

    def __init__(self, codes: list[int], log_dir: Path) -> None:
        self.codes = list(codes)
        self.log_dir = log_dir
        self.launches: list[JobLaunch] = []

    async def start(self, launch: JobLaunch) -> LocalRun:
        self.launches.append(launch)
        code = self.codes.pop(0)
        log_path = self.log_dir / f"{launch.job_id}-{launch.attempt}.log"
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                f"import sys; print('attempt {launch.attempt}: exiting with {code}'); sys.exit({code})",
                stdout=log_file,
                stderr=log_file,
            )
        return LocalRun(process, log_path)


@pytest.fixture(scope="module")
def jobs_database(postgres_dsn_factory) -> str:
    return postgres_dsn_factory()


@pytest.fixture(scope="module")
def store(jobs_database) -> Iterator[JobStore]:
    store = JobStore(jobs_database)
    store.ensure_schema()
    yield store
    store.close()


@pytest.fixture
def settings(jobs_database, rabbitmq_url, unique_name, tmp_path) -> Settings:
    return Settings(
        jobs_database_url=SecretStr(jobs_database),
        jobs_queue=unique_name("jobs"),
        rabbitmq_url=SecretStr(rabbitmq_url),
        job_max_attempts=3,
        job_retry_delay_s=0,
        job_stats_interval_s=0.5,
        job_log_dir=tmp_path,
    )


async def submit(store: JobStore, settings: Settings) -> str:
    submission = store.open_submission(JobKind.SCORE, REQUEST, "tester")
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_job_queue(channel, settings.jobs_queue)
        await channel.default_exchange.publish(job_message(submission.job.id), routing_key=settings.jobs_queue)
    submission.commit()
    return submission.job.id


async def run_until_done(store: JobStore, settings: Settings, runner: ExitingRunner, job_id: str) -> Job:
    worker = JobWorker(settings, store, runner)
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(300):
            job = store.get(job_id)
            if job.state in (JobState.SUCCEEDED, JobState.FAILED):
                return job
            await asyncio.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job.state} after 30 s")
    finally:
        worker.stop()
        await asyncio.wait_for(running, 10)


async def test_a_dependency_down_is_retried_and_the_next_attempt_succeeds(store, settings, tmp_path):
    job_id = await submit(store, settings)
    runner = ExitingRunner([3, 0], tmp_path)
    job = await run_until_done(store, settings, runner, job_id)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 2)
    assert [launch.attempt for launch in runner.launches] == [1, 2]
    assert runner.launches[0].args == REQUEST.args(job_id)
    assert runner.launches[0].env == {"MLOPS_JOB_ID": job_id}
    # The reason of the retried attempt stays readable on the job.
    assert job.error == "exit code 3: attempt 1: exiting with 3"


async def test_retries_are_bounded_and_the_job_fails_with_the_last_reason(store, settings, tmp_path):
    job_id = await submit(store, settings)
    runner = ExitingRunner([3, 3, 3, 0], tmp_path)
    job = await run_until_done(store, settings, runner, job_id)
    assert (job.state, job.attempts) == (JobState.FAILED, 3)
    assert job.error == "gave up after 3 attempts; the last one: exit code 3: attempt 3: exiting with 3"
    assert len(runner.launches) == 3
    assert job.finished_at is not None


async def test_a_bad_request_fails_at_once_with_its_reason(store, settings, tmp_path):
    job_id = await submit(store, settings)
    runner = ExitingRunner([2, 0], tmp_path)
    job = await run_until_done(store, settings, runner, job_id)
    assert (job.state, job.attempts, job.error) == (JobState.FAILED, 1, "exit code 2: attempt 1: exiting with 2")


async def test_a_message_for_a_job_already_done_runs_nothing(store, settings, tmp_path):
    job_id = await submit(store, settings)
    await run_until_done(store, settings, ExitingRunner([0], tmp_path), job_id)
    # The same message again (a redelivery after the ack was lost): the row says it is done.
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(job_message(job_id), routing_key=settings.jobs_queue)
    again = ExitingRunner([0], tmp_path)
    worker = JobWorker(settings, store, again)
    running = asyncio.create_task(worker.run())
    for _ in range(100):
        if await ready_messages(settings) == 0:
            break
        await asyncio.sleep(0.1)
    worker.stop()
    await asyncio.wait_for(running, 10)
    # Taken and acknowledged (an unacknowledged one would be back in the queue once the worker is gone).
    assert await ready_messages(settings) == 0
    assert again.launches == []
    assert store.get(job_id).attempts == 1


async def ready_messages(settings: Settings) -> int:
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.jobs_queue, passive=True)
        return queue.declaration_result.message_count


class CommitsDuringTheClaim(JobStore):
    """The real store, but the submission's COMMIT lands right after the worker's first claim missed the
    row (the API publishes before it commits): the race a busy machine opens between claim and read."""

    def __init__(self, dsn: str, submission) -> None:
        super().__init__(dsn)
        self.submission = submission

    def claim(self, job_id: str) -> Job | None:
        job = super().claim(job_id)
        if self.submission is not None:
            self.submission.commit()
            self.submission = None
        return job


async def test_a_job_whose_submission_commits_between_claim_and_read_is_still_run(store, jobs_database, settings):
    submission = store.open_submission(JobKind.SCORE, REQUEST, "tester")
    racing = CommitsDuringTheClaim(jobs_database, submission)
    try:
        job = await JobWorker(settings, racing, ExitingRunner([], settings.job_log_dir))._claim(submission.job.id)
    finally:
        racing.close()
    assert job is not None
    assert (job.state, job.attempts) == (JobState.RUNNING, 1)
