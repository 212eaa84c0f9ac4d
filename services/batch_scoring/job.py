"""One batch-scoring run: read chunks → Triton (the served version, pinned for the run, several calls in
flight) → Parquet rows written as they come → one object published at the end.

The result appears complete or not at all: rows go to a local file, which is published to
``<output>/<job id>.parquet`` by a staged upload and one server-side copy (or a rename, locally). A run
that fails publishes nothing; a rerun with the same job id replaces the object, never adds a second one.
"""

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch_scoring.inputs import (
    Chunk,
    Input,
    InputError,
    Location,
    applicant_ids,
    applicants_in_offline_store,
    feature_rows,
    features_as_of,
    locate,
)
from batch_scoring.settings import Settings
from mlops_common.decisions import decide
from mlops_common.errors import DependencyUnavailableError
from mlops_common.feast_store import open_feature_store
from mlops_common.features import ENTITY_KEY
from mlops_common.s3 import publish_file_atomically, s3_client
from mlops_common.triton_client import TritonPredictor, check_probabilities

log = logging.getLogger(__name__)
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Where the job's summary lives in the Parquet file's key-value metadata.
METADATA_KEY = b"mlops.batch_scoring"
# Chunks scored at once: the next one's calls start while the previous one's last calls finish.
CHUNKS_IN_FLIGHT = 2

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),  # input row number, from 0
        pa.field(ENTITY_KEY, pa.int64()),
        pa.field("probability", pa.float64(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("scored_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("features_as_of", pa.timestamp("us", tz="UTC")),  # set when the features came from the store
    ]
)


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    output: str  # s3://bucket/prefix or a local folder
    input: str | None = None  # feature rows, or applicant ids with as_of
    as_of: datetime | None = None  # features from the offline store as of this time
    model_version: str | None = None  # None: the version the API serves (Triton's champion)

    def __post_init__(self) -> None:
        if not JOB_ID.fullmatch(self.job_id):
            raise InputError(
                f"job id {self.job_id!r}: 1-64 letters, digits, '.', '_' or '-', starting with one of the first two"
            )
        if self.input is None and self.as_of is None:
            raise InputError("give --input (feature rows), --as-of (every applicant in the offline store), or both")
        if self.as_of is not None and self.as_of.tzinfo is None:
            raise InputError(f"--as-of {self.as_of.isoformat()}: give a time zone (e.g. 2026-11-01T00:00:00Z)")


@dataclass(frozen=True)
class JobResult:
    job_id: str
    output: str
    model_name: str
    model_version: str
    rows_scored: int
    # As-of scoring: applicants the offline store had no feature value for at that time (not scored).
    rows_without_features: int
    seconds: float


def output_uri(output: str, job_id: str) -> str:
    return f"{output.rstrip('/')}/{job_id}.parquet"


async def run_job(spec: JobSpec, settings: Settings, progress: Callable[[int], None] = lambda rows: None) -> JobResult:
    started = time.perf_counter()
    source = _chunks(spec, settings)
    target = output_uri(spec.output, spec.job_id)
    triton = TritonPredictor(settings.triton_http_url, settings.triton_model_name, settings.triton_timeout_s)
    try:
        version, batch_rows = await _served_version(triton, spec.model_version)
        with tempfile.TemporaryDirectory(prefix="batch-scoring-") as work:
            local = Path(work) / "scores.parquet"
            with pq.ParquetWriter(local, OUTPUT_SCHEMA) as writer:
                scored, without_features = await _score_into(
                    writer, source, triton, version, batch_rows, spec, settings, progress
                )
                result = JobResult(
                    spec.job_id,
                    target,
                    triton.model_name,
                    version,
                    scored,
                    without_features,
                    round(time.perf_counter() - started, 3),
                )
                summary = {**asdict(result), "input": spec.input, "as_of": spec.as_of and spec.as_of.isoformat()}
                writer.add_key_value_metadata({METADATA_KEY: json.dumps(summary).encode()})
            _publish(local, target, settings)
    finally:
        await triton.close()
    return result


async def _served_version(triton: TritonPredictor, requested: str | None) -> tuple[str, int]:
    """The version every call of the run pins (a promotion during the run does not mix two models), and
    the rows one call may carry."""
    try:
        if requested is not None:
            if not await triton.version_ready(requested):
                raise InputError(f"--model-version {requested}: not loaded in Triton for model {triton.model_name}")
            version = requested
        else:
            routing = await triton.routing()
            if routing is None:
                raise DependencyUnavailableError(
                    f"triton: model {triton.model_name} has no routing in its config (not loaded by model sync?)"
                )
            version = routing.champion
        max_batch = await triton.max_batch_size()
    except Exception as err:
        if isinstance(err, InputError | DependencyUnavailableError):
            raise
        raise DependencyUnavailableError(f"triton: {type(err).__name__}: {err}") from err
    return version, max(max_batch, 1)


def _chunks(spec: JobSpec, settings: Settings) -> Input:
    chunk_rows = settings.batch_scoring_chunk_rows
    if spec.as_of is None:
        return feature_rows(locate(spec.input, settings), chunk_rows)
    store = open_feature_store(settings)
    if spec.input is not None:
        id_chunks = applicant_ids(locate(spec.input, settings), chunk_rows)
        total = None
    else:
        every = applicants_in_offline_store(settings, spec.as_of)
        id_chunks = (every[i : i + chunk_rows] for i in range(0, len(every), chunk_rows))
        total = len(every)

    def chunks() -> Iterator[Chunk]:
        first_row = 0
        for ids in id_chunks:
            yield Chunk(first_row, pa.array(ids, pa.int64()), features_as_of(store, ids, spec.as_of))
            first_row += len(ids)

    return Input(chunks(), total)


async def _score_into(
    writer: pq.ParquetWriter,
    source: Input,
    triton: TritonPredictor,
    version: str,
    batch_rows: int,
    spec: JobSpec,
    settings: Settings,
    progress: Callable[[int], None],
) -> tuple[int, int]:
    """Score every chunk and write its rows in input order; the rows scored and those without features."""
    in_flight = asyncio.Semaphore(settings.batch_scoring_in_flight)
    pending: deque[asyncio.Task] = deque()
    scored = without_features = 0
    chunks = iter(source.chunks)

    async def write(table: pa.Table, skipped: int) -> None:
        nonlocal scored, without_features
        # Encoding and compressing a chunk takes tens of ms: off the event loop, which keeps Triton busy.
        await asyncio.to_thread(writer.write_table, table)
        scored += table.num_rows
        without_features += skipped
        progress(table.num_rows + skipped)
        log.info("job %s: %d rows scored", spec.job_id, scored)

    try:
        # Reading (S3, Feast's join) runs in a thread while the event loop keeps Triton busy.
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            pending.append(
                asyncio.create_task(_score_chunk(chunk, triton, version, batch_rows, in_flight, spec, settings))
            )
            if len(pending) >= CHUNKS_IN_FLIGHT:
                await write(*await pending.popleft())
        while pending:
            await write(*await pending.popleft())
    finally:
        for task in pending:
            task.cancel()
    return scored, without_features


async def _score_chunk(
    chunk: Chunk,
    triton: TritonPredictor,
    version: str,
    batch_rows: int,
    in_flight: asyncio.Semaphore,
    spec: JobSpec,
    settings: Settings,
) -> tuple[pa.Table, int]:
    features = chunk.features
    rows = np.arange(chunk.first_row, chunk.first_row + len(features), dtype=np.int64)
    entity_ids = chunk.entity_ids
    skipped = 0
    if spec.as_of is not None:
        # An applicant the store knew nothing about at that time has no score to give.
        known = ~np.isnan(features).all(axis=1)
        skipped = int((~known).sum())
        if skipped:
            features, rows, entity_ids = features[known], rows[known], entity_ids.filter(pa.array(known))
    probabilities = np.empty(len(features), dtype=np.float32)

    async def call(start: int) -> None:
        async with in_flight:
            part = await _predict(
                triton, features[start : start + batch_rows], version, f"{spec.job_id}-{rows[start]}", settings
            )
        probabilities[start : start + len(part)] = part

    try:
        async with asyncio.TaskGroup() as calls:
            for start in range(0, len(features), batch_rows):
                calls.create_task(call(start))
    except ExceptionGroup as failed:  # the first call's error, as a plain exception: it names the cause
        raise failed.exceptions[0] from None
    n = len(features)
    stamp = pa.timestamp("us", tz="UTC")
    table = pa.Table.from_arrays(
        [
            pa.array(rows),
            entity_ids,
            pa.array(probabilities.astype(np.float64)),
            pa.array(decide(probabilities, settings.decision_threshold)),
            pa.repeat(pa.scalar(triton.model_name), n),
            pa.repeat(pa.scalar(version), n),
            pa.repeat(pa.scalar(datetime.now(UTC), stamp), n),
            pa.repeat(pa.scalar(spec.as_of, stamp), n),
        ],
        schema=OUTPUT_SCHEMA,
    )
    return table, skipped


async def _predict(
    triton: TritonPredictor, features: np.ndarray, version: str, request_id: str, settings: Settings
) -> np.ndarray:
    """One Triton call, tried again while Triton answers it is unavailable; a refusal or a probability
    outside [0, 1] fails the run at once (retrying cannot fix a broken model)."""
    attempts = settings.batch_scoring_call_attempts
    for attempt in range(1, attempts + 1):
        try:
            probabilities, answered_by = await triton.predict(features, version=version, request_id=request_id)
            break
        except DependencyUnavailableError as err:
            if attempt == attempts:
                raise DependencyUnavailableError(f"{err} (after {attempts} attempts)") from err
            await asyncio.sleep(min(2.0, 0.1 * 2 ** (attempt - 1)))
    check_probabilities(probabilities, triton.model_name, answered_by)
    return probabilities


def _publish(local: Path, target: str, settings: Settings) -> None:
    location: Location = locate(target, settings)
    if target.startswith("s3://"):
        bucket, _, key = location.path.partition("/")
        publish_file_atomically(s3_client(settings), bucket, key, local)
    else:
        Path(location.path).parent.mkdir(parents=True, exist_ok=True)
        staged = Path(location.path).with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(local, staged)  # then one rename: readers see the old file or the new one
        staged.replace(location.path)
