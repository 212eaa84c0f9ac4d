"""One job at a time off the work queue: claim its row, run an attempt, record how it ended.

A message is acknowledged only once its job has an end (succeeded, failed, or requeued for a retry); a
worker that dies mid-job leaves the message unacknowledged, RabbitMQ hands it to the next worker, and the
claim counts that as another attempt. So a job is retried at most ``JOB_MAX_ATTEMPTS`` times in all,
whoever ran it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time

import psycopg2
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import AMQPError
from prometheus_client import Counter, Gauge, Histogram

from job_worker.runners import JobLaunch, Runner
from job_worker.settings import Settings
from mlops_common.jobs import EXIT_DEPENDENCY_UNAVAILABLE, JOB_ID_PATTERN, Job, JobKind, JobState, JobStore
from mlops_common.metrics import service_registry
from mlops_common.rabbit import connect, declare_job_queue

log = logging.getLogger(__name__)

JOB_ID = re.compile(JOB_ID_PATTERN)
# How long a message may wait for its row: the API publishes before it commits (milliseconds apart).
UNCOMMITTED_WAIT_S = 5.0
OUTCOMES = ("succeeded", "failed", "retried")

REGISTRY = service_registry()
JOBS = Counter(
    "job_worker_jobs",
    "Attempts that ended, by how (retried: the job was queued again)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "job_worker_job_duration_seconds",
    "Duration of an attempt",
    ["kind"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
    registry=REGISTRY,
)
ROWS_SCORED = Counter("job_worker_rows_scored", "Rows the scoring jobs run by this worker reported", registry=REGISTRY)
RUNNING = Gauge("job_worker_running", "1 while this worker runs a job", registry=REGISTRY)
QUEUE_DEPTH = Gauge("job_worker_queue_depth", "Jobs waiting in the work queue", registry=REGISTRY)
BY_STATE = Gauge(
    "job_worker_jobs_by_state", "Jobs in the database, by kind and state", ["kind", "state"], registry=REGISTRY
)
for _kind in JobKind:
    DURATION.labels(_kind.value)
    for _outcome in OUTCOMES:
        JOBS.labels(_kind.value, _outcome)
    for _state in JobState:
        BY_STATE.labels(_kind.value, _state.value)


def retryable(exit_code: int) -> bool:
    """A dependency was down, or the process was killed by a signal (negative here, > 128 in a pod)."""
    return exit_code == EXIT_DEPENDENCY_UNAVAILABLE or exit_code < 0 or exit_code > 128


class JobWorker:
    def __init__(self, settings: Settings, store: JobStore, runner: Runner) -> None:
        self.settings = settings
        self.store = store
        self.runner = runner
        self._stopping = asyncio.Event()
        self._rows_seen = 0  # of the attempt under way

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self._until_the_database_answers()
        stopping = asyncio.create_task(self._stopping.wait())
        backoff = 0.5
        try:
            while not self._stopping.is_set():
                session = asyncio.create_task(self._session())
                await asyncio.wait({session, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not session.done():
                    # Stopped: a job under way is stopped too, its message goes back to the queue.
                    session.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await session
                    break
                try:
                    session.result()
                    backoff = 0.5
                except (AMQPError, OSError, TimeoutError, psycopg2.Error) as err:
                    log.warning("job worker lost RabbitMQ or the database (%r); reconnecting", err)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_s)
        finally:
            stopping.cancel()
        log.info("job worker stopped")

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _until_the_database_answers(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.store.ensure_schema)
                return
            except psycopg2.Error as err:
                log.warning("jobs database not reachable yet (%s)", str(err).strip())
            await self._sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _session(self) -> None:
        connection = await connect(
            self.settings.rabbitmq_url.get_secret_value(),
            connect_timeout_s=self.settings.connect_timeout_s,
            name="job worker",
        )
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1)  # one job at a time; the others stay for other workers
            queue = await declare_job_queue(channel, self.settings.jobs_queue)
            stats = asyncio.create_task(self._export_stats(connection))
            try:
                async with queue.iterator() as messages:
                    async for message in messages:
                        await self.handle(message)
            finally:
                stats.cancel()

    async def _export_stats(self, connection) -> None:
        channel = await connection.channel()
        while True:
            try:
                declared = await channel.declare_queue(self.settings.jobs_queue, passive=True)
                QUEUE_DEPTH.set(declared.declaration_result.message_count)
                for (kind, state), n in (await asyncio.to_thread(self.store.counts)).items():
                    BY_STATE.labels(kind, state).set(n)
            except Exception as err:  # figures only: the next round tries again
                log.warning("could not read the job statistics: %r", err)
            await asyncio.sleep(self.settings.job_stats_interval_s)

    # -- one message ----------------------------------------------------------------------------------
    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            job_id = json.loads(message.body)["job_id"]
            if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
                raise ValueError(f"job id {job_id!r}")
        except (ValueError, KeyError, TypeError) as err:
            log.error("dropping a message that names no job (%s): %r", err, message.body[:200])
            await message.reject(requeue=False)
            return
        job = await self._claim(job_id)
        if job is None:
            await message.ack()
            return
        if job.attempts > self.settings.job_max_attempts:
            await self._fail(job, f"gave up after {job.attempts - 1} attempts; the last one: {job.error}")
            await message.ack()
            return
        if await self._attempt(job):
            await message.ack()
        else:
            # Held (prefetch 1) while the delay passes, then handed back: the retry is the next claim.
            await self._sleep(self.settings.job_retry_delay_s * job.attempts)
            await message.nack(requeue=True)

    async def _claim(self, job_id: str) -> Job | None:
        deadline = time.monotonic() + UNCOMMITTED_WAIT_S
        while True:
            job = await asyncio.to_thread(self.store.claim, job_id)
            if job is not None:
                return job
            known = await asyncio.to_thread(self.store.get, job_id)
            if known is not None and known.state in (JobState.SUCCEEDED, JobState.FAILED):
                log.info("job %s is already %s: nothing to do", job_id, known.state)
                return None
            # Queued or running now: its submission committed between the claim and this read. Claim again.
            if known is None and time.monotonic() > deadline:
                log.warning("job %s is not in the database (its submission did not commit): dropped", job_id)
                return None
            await asyncio.sleep(0.2)

    async def _attempt(self, job: Job) -> bool:
        """Run one attempt; True when the job has an end (succeeded or failed), False when it is retried."""
        launch = JobLaunch(
            job_id=job.id,
            attempt=job.attempts,
            kind=job.kind.value,
            args=job.args(),
            env={"MLOPS_JOB_ID": job.id},
        )
        log.info("job %s (%s): attempt %d of %d", job.id, job.kind, job.attempts, self.settings.job_max_attempts)
        started = time.monotonic()
        self._rows_seen = 0
        RUNNING.set(1)
        try:
            run = await self.runner.start(launch)
            progress = asyncio.create_task(self._follow_progress(job))
            try:
                exit_code = await asyncio.wait_for(run.wait(), self.settings.job_timeout_s)
            except TimeoutError:
                await run.cancel()
                await self._fail(job, f"timed out after {self.settings.job_timeout_s:g} s (JOB_TIMEOUT_S)")
                return True
            except asyncio.CancelledError:  # the worker stops: so does the attempt
                await asyncio.shield(run.cancel())
                raise
            finally:
                progress.cancel()
                await self._count_rows(job)
        finally:
            RUNNING.set(0)
            DURATION.labels(job.kind.value).observe(time.monotonic() - started)
        if exit_code == 0:
            await asyncio.to_thread(self.store.succeed, job.id)
            JOBS.labels(job.kind.value, "succeeded").inc()
            log.info("job %s succeeded", job.id)
            return True
        reason = f"exit code {exit_code}: {await run.error_output() or 'no output'}"
        if retryable(exit_code) and job.attempts < self.settings.job_max_attempts:
            await asyncio.to_thread(self.store.requeue, job.id, reason)
            JOBS.labels(job.kind.value, "retried").inc()
            log.warning("job %s attempt %d failed (%s); retried", job.id, job.attempts, reason)
            return False
        if retryable(exit_code):
            reason = f"gave up after {job.attempts} attempts; the last one: {reason}"
        await self._fail(job, reason)
        return True

    async def _fail(self, job: Job, reason: str) -> None:
        await asyncio.to_thread(self.store.fail, job.id, reason)
        JOBS.labels(job.kind.value, "failed").inc()
        log.error("job %s failed: %s", job.id, reason)

    # -- rows scored, from what the job reports into its row -------------------------------------------
    async def _follow_progress(self, job: Job) -> None:
        while True:
            await asyncio.sleep(2)
            await self._count_rows(job)

    async def _count_rows(self, job: Job) -> None:
        if job.kind != JobKind.SCORE:
            return
        with contextlib.suppress(Exception):  # a figure only
            current = await asyncio.to_thread(self.store.get, job.id)
            reported = int((current.progress or {}).get("rows_scored", 0)) if current else 0
            if reported > self._rows_seen:
                ROWS_SCORED.inc(reported - self._rows_seen)
                self._rows_seen = reported
