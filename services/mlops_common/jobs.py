"""Jobs on demand: what can be asked for, and where each job's state lives.

    POST /jobs/score|train (BFF) --INSERT + publish {"job_id"} in one step--> PostgreSQL row + RabbitMQ queue
    job worker: claim the row (attempts + 1) -> run the job (a process, or a Kubernetes Job) -> succeeded | failed
    the job's process: reports its progress and its result into its row (``JobReporter``)

The row is the truth about a job (its state, attempts, progress, result, error); the queue only says which
job to work on next. A message whose row never committed is dropped by the worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import typing
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import psycopg2
import psycopg2.extras
import psycopg2.pool
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from mlops_common.errors import DependencyUnavailableError
from mlops_common.settings import PlatformSettings
from mlops_common.training_profiles import DEFAULT_PROFILE, Hyperparameters

log = logging.getLogger(__name__)

TABLE = "mlops_jobs"
# A job's id: new_job_id's form, checked by the API (path parameter), the worker and the Kubernetes runner.
JOB_ID_PATTERN = r"^[0-9a-f]{12}$"
# Exit codes of a job's process (batch scoring, the trainer), which the job worker acts on: a bad request and a
# model error fail the job at once, a dependency that was unavailable is retried.
EXIT_BAD_REQUEST = 2
EXIT_DEPENDENCY_UNAVAILABLE = 3
EXIT_MODEL_ERROR = 4
# Serialises the schema's creation between processes starting at once (CREATE ... IF NOT EXISTS races).
_SCHEMA_LOCK_ID = 0x6D6C6F7073  # "mlops"
# What an S3 location must look like: the job runs elsewhere, so a local path would name the wrong disk.
# No ASCII space or control characters in keys (PostgreSQL's JSON cannot even store a NUL); spelled out rather
# than \s, whose meaning differs between the regex dialects that read the pattern (pydantic's, clients').
_BUCKET = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_KEY_CHARACTER = r"[^\x00-\x20\x7f]"
S3_URI = rf"^{_BUCKET}(/{_KEY_CHARACTER}*)?$"
S3_TABLE = rf"^{_BUCKET}/{_KEY_CHARACTER}*\.(parquet|csv)$"


class JobsSettings(PlatformSettings):
    # libpq URL of the jobs' database (postgresql://user:password@host:port/name); unset: jobs are off.
    jobs_database_url: SecretStr | None = None
    jobs_queue: str = "mlops.jobs"
    # The API's connect to RabbitMQ, and then its wait for the broker's confirm of a job (503 past either).
    jobs_broker_timeout_s: float = Field(5.0, gt=0)
    # Set by the job worker for the job's own process: the row its progress and result go to.
    mlops_job_id: str | None = None


class JobKind(StrEnum):
    SCORE = "score"
    TRAIN = "train"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _time_text(value: Any) -> Any:
    # pydantic would read a number as a Unix time; the API takes ISO 8601 text (or `now`) only.
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("a date-time with a time zone (ISO 8601, e.g. 2026-11-01T00:00:00Z), or `now`")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScoreJobRequest(_Request):
    """Score a table (``input``), or every applicant the offline store knows at ``as_of``, or the applicants
    ``input`` lists at ``as_of``; results go to ``<output>/<job id>.parquet``."""

    # `input`, `as_of` or both, said in the OpenAPI document too (clients and fuzzers read it).
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["input"], "properties": {"input": {"type": "string"}}},
                {"required": ["as_of"], "properties": {"as_of": {"not": {"type": "null"}}}},
            ]
        }
    )

    input: str | None = Field(
        None,
        pattern=S3_TABLE,
        description="s3://bucket/key of a .parquet or .csv table: feature rows, or with `as_of` an SK_ID_CURR column",
        examples=["s3://mlops-raw/portfolio/2026-11.parquet"],
    )
    as_of: Annotated[AwareDatetime | Literal["now"] | None, BeforeValidator(_time_text)] = Field(
        None,
        description="features from the offline store as of this time (with a time zone), or `now` (the time the "
        "job is submitted, kept for its retries)",
        examples=["now"],
    )
    output: str = Field(
        pattern=S3_URI, description="s3://bucket/prefix of the results", examples=["s3://mlops-scores/daily"]
    )
    model_version: str | None = Field(
        None, pattern=r"^[0-9]{1,9}$", description="a version Triton has loaded (default: the champion the API serves)"
    )

    @model_validator(mode="after")
    def _something_to_score(self) -> ScoreJobRequest:
        if self.input is None and self.as_of is None:
            raise ValueError("give `input` (feature rows), `as_of` (every applicant in the offline store), or both")
        return self

    def resolved(self, submitted_at: datetime) -> ScoreJobRequest:
        """`now` pinned to the submission time: a retry scores the same portfolio."""
        return self.model_copy(update={"as_of": submitted_at}) if self.as_of == "now" else self

    def args(self, job_id: str) -> list[str]:
        """``python -m batch_scoring`` arguments."""
        args = ["--output", self.output, "--job-id", job_id]
        if self.input is not None:
            args += ["--input", self.input]
        if isinstance(self.as_of, datetime):
            args += ["--as-of", self.as_of.isoformat()]
        if self.model_version is not None:
            args += ["--model-version", self.model_version]
        return args


_INTEGER_FIELDS = {
    name
    for name, field in Hyperparameters.model_fields.items()
    if field.annotation is int or int in typing.get_args(field.annotation)
}


class HyperparameterOverrides(Hyperparameters):
    """What a request may override: a profile's hyperparameters, except class weights by class (the profiles
    file's YAML keys them by number, JSON cannot), and `scoring` one of scikit-learn's scorer names."""

    class_weight: Literal["balanced"] | None = None
    scoring: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$", max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers_are_integers(cls, data: Any) -> Any:
        # JSON Schema's integer includes 50.0 (as JSON clients may write it); pydantic's strict int does not.
        if not isinstance(data, dict):
            return data
        return {
            name: int(value) if name in _INTEGER_FIELDS and isinstance(value, float) and value.is_integer() else value
            for name, value in data.items()
        }


class TrainJobRequest(_Request):
    """Train with a named profile (``GET /profiles``), hyperparameters overridden; the champion gate decides
    whether the new version is promoted (``promote: false``: registered as a challenger only)."""

    profile: str = Field(DEFAULT_PROFILE, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    hyperparameters: HyperparameterOverrides = Field(
        default_factory=HyperparameterOverrides, description="overrides of the profile's hyperparameters"
    )
    promote: bool = Field(True, strict=True)

    def args(self, job_id: str) -> list[str]:
        """``python -m trainer`` arguments."""
        args = ["--profile", self.profile, "--tag", f"job_id={job_id}"]
        for name, value in self.hyperparameters.as_dict().items():
            args += ["--param", f"{name}={json.dumps(value)}"]
        return args if self.promote else [*args, "--no-promote"]


REQUESTS: dict[JobKind, type[ScoreJobRequest] | type[TrainJobRequest]] = {
    JobKind.SCORE: ScoreJobRequest,
    JobKind.TRAIN: TrainJobRequest,
}


class Job(BaseModel):
    """A job as the API shows it."""

    id: str
    kind: JobKind
    state: JobState
    request: dict[str, Any]
    submitted_by: str | None = Field(description="the API key's name (null when keys are not required)")
    attempts: int = Field(description="attempts started so far")
    progress: dict[str, Any] | None = Field(description="what the running job reported last, e.g. rows_scored")
    result: dict[str, Any] | None = Field(description="where the scores are, or the registered version")
    error: str | None = Field(description="why the job failed (or why its last attempt did, while it is retried)")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def args(self) -> list[str]:
        return REQUESTS[self.kind].model_validate(self.request).args(self.id)


class Submission:
    """A job inserted in a transaction still open: ``commit`` makes it visible, ``rollback`` forgets it."""

    def __init__(self, job: Job, connection, pool: psycopg2.pool.ThreadedConnectionPool) -> None:
        self.job = job
        self._connection = connection
        self._pool = pool

    def commit(self) -> None:
        try:
            self._connection.commit()
        finally:
            self._pool.putconn(self._connection, close=bool(self._connection.closed))

    def rollback(self) -> None:
        try:
            with contextlib.suppress(psycopg2.Error):  # a broken connection has no transaction left
                self._connection.rollback()
        finally:
            self._pool.putconn(self._connection, close=bool(self._connection.closed))


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


class JobStore:
    """The jobs table, through a small pool of psycopg2 connections (blocking: async callers use threads)."""

    def __init__(self, database_url: str, *, max_connections: int = 4) -> None:
        self._pool = psycopg2.pool.ThreadedConnectionPool(0, max_connections, database_url, connect_timeout=5)

    def close(self) -> None:
        self._pool.closeall()

    @contextmanager
    def _transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        connection = self._pool.getconn()
        try:
            with connection, connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                yield cursor
        finally:
            self._pool.putconn(connection, close=bool(connection.closed))

    def ensure_schema(self) -> None:
        with self._transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))
            cursor.execute(
                f"""
                CREATE TABLE IF NOT EXISTS {TABLE} (
                    id text PRIMARY KEY,
                    kind text NOT NULL,
                    state text NOT NULL,
                    request jsonb NOT NULL,
                    submitted_by text,
                    attempts integer NOT NULL DEFAULT 0,
                    progress jsonb,
                    result jsonb,
                    error text,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    started_at timestamptz,
                    finished_at timestamptz
                );
                CREATE INDEX IF NOT EXISTS {TABLE}_created_at ON {TABLE} (created_at DESC);
                """
            )

    # -- the API --------------------------------------------------------------------------------------
    def open_submission(
        self, kind: JobKind, request: ScoreJobRequest | TrainJobRequest, submitted_by: str | None
    ) -> Submission:
        """Insert a queued job, not yet committed: the caller publishes it, then commits (or rolls back when
        it could not be queued, so a job that was never queued is never seen)."""
        now = datetime.now(UTC)
        if isinstance(request, ScoreJobRequest):
            request = request.resolved(now)
        connection = self._pool.getconn()
        try:
            with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                cursor.execute(
                    f"INSERT INTO {TABLE} (id, kind, state, request, submitted_by, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
                    (
                        new_job_id(),
                        kind.value,
                        JobState.QUEUED.value,
                        # What the caller asked for (unset fields keep their defaults when read back).
                        request.model_dump_json(exclude_unset=True),
                        submitted_by,
                        now,
                    ),
                )
                job = Job.model_validate(cursor.fetchone())
        except BaseException:
            connection.rollback()
            self._pool.putconn(connection, close=bool(connection.closed))
            raise
        return Submission(job, connection, self._pool)

    def get(self, job_id: str) -> Job | None:
        with self._transaction() as cursor:
            cursor.execute(f"SELECT * FROM {TABLE} WHERE id = %s", (job_id,))
            row = cursor.fetchone()
        return Job.model_validate(row) if row else None

    def recent(self, limit: int, *, kind: JobKind | None = None, state: JobState | None = None) -> list[Job]:
        with self._transaction() as cursor:
            cursor.execute(
                f"SELECT * FROM {TABLE} WHERE (%(kind)s IS NULL OR kind = %(kind)s) "
                "AND (%(state)s IS NULL OR state = %(state)s) ORDER BY created_at DESC LIMIT %(limit)s",
                {"kind": kind and kind.value, "state": state and state.value, "limit": limit},
            )
            return [Job.model_validate(row) for row in cursor.fetchall()]

    # -- the worker -----------------------------------------------------------------------------------
    def claim(self, job_id: str) -> Job | None:
        """Start an attempt of a job that is not finished (one more attempt, its progress from 0); None when the
        job is finished or unknown."""
        with self._transaction() as cursor:
            cursor.execute(
                f"UPDATE {TABLE} SET state = %s, attempts = attempts + 1, progress = NULL, "
                "started_at = coalesce(started_at, now()) "
                "WHERE id = %s AND state IN (%s, %s) RETURNING *",
                (JobState.RUNNING.value, job_id, JobState.QUEUED.value, JobState.RUNNING.value),
            )
            row = cursor.fetchone()
        return Job.model_validate(row) if row else None

    def requeue(self, job_id: str, error: str) -> None:
        self._set(job_id, JobState.QUEUED, error=error)

    def succeed(self, job_id: str) -> None:
        self._set(job_id, JobState.SUCCEEDED, finished=True)

    def fail(self, job_id: str, error: str) -> None:
        self._set(job_id, JobState.FAILED, error=error, finished=True)

    def _set(self, job_id: str, state: JobState, *, error: str | None = None, finished: bool = False) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                f"UPDATE {TABLE} SET state = %s, error = coalesce(%s, error), "
                "finished_at = CASE WHEN %s THEN now() ELSE finished_at END WHERE id = %s",
                (state.value, error, finished, job_id),
            )

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs by (kind, state)."""
        with self._transaction() as cursor:
            cursor.execute(f"SELECT kind, state, count(*) AS n FROM {TABLE} GROUP BY kind, state")
            return {(row["kind"], row["state"]): row["n"] for row in cursor.fetchall()}

    # -- the job's own process ----------------------------------------------------------------------
    def record(
        self, job_id: str, *, progress: dict[str, Any] | None = None, result: dict[str, Any] | None = None
    ) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                f"UPDATE {TABLE} SET progress = coalesce(%s, progress), result = coalesce(%s, result) "
                "WHERE id = %s AND state = %s",
                (
                    progress and json.dumps(progress),
                    result and json.dumps(result),
                    job_id,
                    JobState.RUNNING.value,
                ),
            )


class JobReporter:
    """What a job's process tells its row: progress (at most once per ``interval_s``) and its result. Does
    nothing when the process was not started by the job worker (a shell, the CronJob's schedule)."""

    def __init__(self, settings: JobsSettings, interval_s: float = 1.0) -> None:
        self.job_id = settings.mlops_job_id
        url = settings.jobs_database_url
        self._store = JobStore(url.get_secret_value(), max_connections=1) if url and self.job_id else None
        self._interval_s = interval_s
        self._last = 0.0

    def progress(self, **progress: Any) -> None:
        now = time.monotonic()
        if self._store is None or now - self._last < self._interval_s:
            return
        self._last = now
        try:
            self._store.record(self.job_id, progress=progress)
        except psycopg2.Error as err:  # progress is informative: the job goes on without it
            log.warning("could not report the progress of job %s: %s", self.job_id, err)

    def result(self, **result: Any) -> None:
        """Recorded before the process exits; the worker marks the job succeeded once it has exited 0."""
        if self._store is None:
            return
        try:
            self._store.record(self.job_id, result=result)
        except psycopg2.Error as err:
            raise DependencyUnavailableError(f"the jobs database did not take the result: {err}".strip()) from err
