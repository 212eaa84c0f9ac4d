"""The jobs API: batch scoring and training runs on request, run by the job worker (``services/job_worker``).

Mounted only where the deployment has a jobs database (``JOBS_DATABASE_URL``); behind the same API keys as
the predictions. ``POST`` inserts the job and publishes it on the work queue in one step: the row commits
only once the broker has confirmed the message, so a 503 leaves no job behind and a 202 is a queued job.
"""

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import aio_pika
import psycopg2
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import AMQPError
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, create_model

from bff.auth import CallerDep
from bff.schemas import ErrorBody, ValidationErrorBody
from bff.settings import Settings
from mlops_common.errors import DependencyUnavailableError
from mlops_common.jobs import JOB_ID_PATTERN, Job, JobKind, JobState, JobStore, ScoreJobRequest, TrainJobRequest
from mlops_common.rabbit import connect, declare_job_queue, job_message
from mlops_common.training_profiles import TrainingProfile, load_training_profiles

log = logging.getLogger(__name__)

# Per BFF worker process: job requests are few, and each holds a connection for milliseconds.
DATABASE_CONNECTIONS = 4
PROFILE_DOC = "a profile of GET /profiles"
SCORE_EXAMPLE = {"as_of": "now", "output": "s3://mlops-scores/daily"}
TRAIN_EXAMPLE = {"profile": "small", "hyperparameters": {"max_iter": 50}}


class JobList(BaseModel):
    jobs: list[Job] = Field(description="newest first")


class ProfileList(BaseModel):
    profiles: dict[str, TrainingProfile]


class JobQueue:
    """Publishes job ids on the work queue, with publisher confirms, over one connection opened on first use
    and again after a failure."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.rabbitmq_url.get_secret_value()
        self.queue = settings.jobs_queue
        self.timeout_s = settings.jobs_broker_timeout_s
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def publish(self, job_id: str) -> None:
        async with self._lock:
            try:
                if self._channel is None or self._channel.is_closed:
                    await self._open()
                await asyncio.wait_for(
                    self._channel.default_exchange.publish(job_message(job_id), routing_key=self.queue, mandatory=True),
                    self.timeout_s,
                )
            except (aio_pika.exceptions.AMQPException, AMQPError, OSError, TimeoutError) as err:
                await self.close()
                raise DependencyUnavailableError(f"the job queue (RabbitMQ) did not take the job: {err!r}") from err

    async def _open(self) -> None:
        await self.close()
        self._connection = await connect(self.url, connect_timeout_s=self.timeout_s, name="bff jobs")
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_job_queue(self._channel, self.queue)

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


class Jobs:
    """The jobs' database and queue, created once in the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.store = JobStore(settings.jobs_database_url.get_secret_value(), max_connections=DATABASE_CONNECTIONS)
        self.queue = JobQueue(settings)
        self._schema_ready = False
        # A request waits for one of the pool's connections (the pool itself refuses past its size).
        self._connections = asyncio.Semaphore(DATABASE_CONNECTIONS)

    async def _in_thread(self, function, *args):
        """A blocking store call in a thread, the schema created first; the database unreachable is a 503."""
        try:
            if not self._schema_ready:
                await asyncio.to_thread(self.store.ensure_schema)
                self._schema_ready = True
            return await asyncio.to_thread(function, *args)
        except psycopg2.OperationalError as err:
            raise DependencyUnavailableError(f"the jobs database: {str(err).strip()}") from err

    async def _call(self, function, *args):
        async with self._connections:
            return await self._in_thread(function, *args)

    async def submit(self, kind: JobKind, request: ScoreJobRequest | TrainJobRequest, submitted_by: str | None) -> Job:
        async with self._connections:  # one connection from the INSERT to the COMMIT
            submission = await self._in_thread(self.store.open_submission, kind, request, submitted_by)
            try:
                await self.queue.publish(submission.job.id)
            except BaseException:
                await asyncio.to_thread(submission.rollback)
                raise
            await self._in_thread(submission.commit)
        log.info("job %s (%s) queued for %s", submission.job.id, kind, submitted_by or "anyone")
        return submission.job

    async def get(self, job_id: str) -> Job | None:
        return await self._call(self.store.get, job_id)

    async def recent(self, limit: int, kind: JobKind | None, state: JobState | None) -> list[Job]:
        return await self._call(lambda: self.store.recent(limit, kind=kind, state=state))

    async def close(self) -> None:
        await self.queue.close()
        self.store.close()


async def get_jobs(request: Request) -> Jobs:
    return request.app.state.jobs


JobsDep = Annotated[Jobs, Depends(get_jobs)]

_UNAVAILABLE = {"model": ErrorBody, "description": "The jobs database or queue is unavailable; retry later"}
_UNAUTHORIZED = {"model": ErrorBody, "description": "No API key, or an unknown one (where keys are required)"}
_INVALID = {"model": ValidationErrorBody, "description": "Invalid body or parameter; every invalid field is listed"}
_TOO_MANY = {"model": ErrorBody, "description": "The key's rate limit is spent; retry after `Retry-After` seconds"}
_COMMON = {401: _UNAUTHORIZED, 422: _INVALID, 429: _TOO_MANY, 503: _UNAVAILABLE}


def _train_request_model(profiles: dict[str, TrainingProfile]) -> type[TrainJobRequest]:
    """TrainJobRequest whose `profile` lists the deployment's profiles (OpenAPI enum, 422 for another)."""
    names = tuple(profiles)
    return create_model(
        "TrainJobRequest",
        __base__=TrainJobRequest,
        profile=(Literal[names], Field(TrainJobRequest.model_fields["profile"].default, description=PROFILE_DOC)),
    )


def jobs_router(route_class: type[APIRoute], profiles_file: Path) -> APIRouter:
    profiles = load_training_profiles(profiles_file)
    train_request = _train_request_model(profiles)
    router = APIRouter(route_class=route_class, tags=["jobs"])

    def accepted(job: Job, response: Response) -> Job:
        response.headers["Location"] = f"/jobs/{job.id}"
        return job

    @router.post(
        "/jobs/score",
        status_code=202,
        response_model=Job,
        summary="Score a table, or the whole portfolio as of a time",
        description=(
            "Queues a batch-scoring job: every row of `input` (a Parquet or CSV table of feature rows in S3), or "
            "every applicant the offline store knows at `as_of` (point in time: no later value leaks), or the "
            "applicants `input` lists at `as_of`. Scored through Triton by the model the API serves (or "
            "`model_version`) and written to `<output>/<job id>.parquet`, complete or not at all. "
            "`GET /jobs/{id}` follows it."
        ),
        responses={**_COMMON, 202: {"description": "Queued; `Location` is the job"}},
    )
    async def score(
        body: Annotated[
            ScoreJobRequest,
            Body(openapi_examples={"portfolio": {"summary": "Every applicant, as of now", "value": SCORE_EXAMPLE}}),
        ],
        jobs: JobsDep,
        caller: CallerDep,
        response: Response,
    ) -> Job:
        return accepted(await jobs.submit(JobKind.SCORE, body, caller), response)

    @router.post(
        "/jobs/train",
        status_code=202,
        response_model=Job,
        summary="Train a model with a profile",
        description=(
            "Queues a training run with a profile of `GET /profiles`, its hyperparameters overridden by "
            "`hyperparameters`. The run registers a new version in MLflow; the champion gate promotes it when it "
            "beats the champion on the holdout (`promote: false`: registered as a challenger only). "
            "`GET /jobs/{id}` shows the registered version once it is done."
        ),
        responses={**_COMMON, 202: {"description": "Queued; `Location` is the job"}},
    )
    async def train(
        body: Annotated[
            train_request,  # type: ignore[valid-type]
            Body(openapi_examples={"small": {"summary": "A quick run", "value": TRAIN_EXAMPLE}}),
        ],
        jobs: JobsDep,
        caller: CallerDep,
        response: Response,
    ) -> Job:
        request = TrainJobRequest.model_validate(body.model_dump(exclude_unset=True))
        return accepted(await jobs.submit(JobKind.TRAIN, request, caller), response)

    @router.get(
        "/jobs/{job_id}",
        response_model=Job,
        summary="A job: its state, progress, result or error",
        responses={**_COMMON, 404: {"model": ErrorBody, "description": "No job has this id"}},
    )
    async def get_job(
        job_id: Annotated[str, PathParam(pattern=JOB_ID_PATTERN, description="as POST /jobs/... answered it")],
        jobs: JobsDep,
        _: CallerDep,
    ) -> Job:
        job = await jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @router.get("/jobs", response_model=JobList, summary="Recent jobs, newest first", responses=_COMMON)
    async def list_jobs(
        jobs: JobsDep,
        _: CallerDep,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        kind: JobKind | None = None,
        state: JobState | None = None,
    ) -> JobList:
        return JobList(jobs=await jobs.recent(limit, kind, state))

    @router.get(
        "/profiles",
        response_model=ProfileList,
        response_model_by_alias=True,
        response_model_exclude_unset=True,  # what the file sets, as it sets it
        summary="The training profiles",
        description="Named training presets (services/trainer/profiles.yaml): hyperparameters, holdout, resources.",
        responses={401: _UNAUTHORIZED, 429: _TOO_MANY},
    )
    async def list_profiles(_: CallerDep) -> dict[str, Any]:
        return {"profiles": profiles}

    return router
