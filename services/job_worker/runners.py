"""How one attempt of a job runs: a local process (`JOB_RUNNER=local`) or a Kubernetes Job
(`JOB_RUNNER=kubernetes`, ``job_worker.kubernetes_runner``). The worker only starts, waits and cancels."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from mlops_common.processes import die_with_parent

# The module each kind of job runs (`python -m <module> <args>`), locally and in the Job templates.
MODULES = {"score": "batch_scoring", "train": "trainer"}
ATTEMPT_MARKER = "--- job worker: attempt "


@dataclass(frozen=True)
class JobLaunch:
    job_id: str  # the platform's job id: 12 lowercase hex characters
    attempt: int  # 1-based
    kind: str  # "score" | "train"
    args: list[str]  # after `python -m batch_scoring` / `python -m trainer`
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the job's process


class JobRun(Protocol):
    async def wait(self) -> int:
        """The job's exit code: 0 done, 2 bad request, 3 dependency unavailable (retried), 4 model error."""

    async def cancel(self) -> None:
        """Stop it (a timeout); idempotent."""

    async def error_output(self) -> str:
        """The end of what the job wrote (its reason, when it failed)."""


class Runner(Protocol):
    async def start(self, launch: JobLaunch) -> JobRun: ...


def tail(path: Path, max_chars: int = 2000) -> str:
    """The end of a job's log, whole lines of its last attempt only: a job's error is what it printed last."""
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        start = max(0, file.tell() - max_chars)
        file.seek(start)
        text = file.read().decode(errors="replace")
    if ATTEMPT_MARKER in text:
        text = text.rsplit(ATTEMPT_MARKER, 1)[1].split("\n", 1)[-1]
    elif start > 0:
        text = text.split("\n", 1)[-1]
    return text.strip()


class LocalRun:
    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    async def wait(self) -> int:
        return await self.process.wait()

    async def cancel(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    async def error_output(self) -> str:
        return await asyncio.to_thread(tail, self.log_path)


class LocalRunner:
    """Each attempt as a child process of the worker, its output appended to ``<log_dir>/<job id>.log``.
    The child dies with the worker (a killed worker's job is retried by the next one, not left running)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def _log_path(self, launch: JobLaunch) -> Path:
        return self.log_dir / f"{launch.job_id}.log"

    def _log_file(self, launch: JobLaunch) -> BinaryIO:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self._log_path(launch), "ab")  # noqa: SIM115 (closed by start)
        log_file.write(f"{ATTEMPT_MARKER}{launch.attempt}\n".encode())
        log_file.flush()
        return log_file

    async def start(self, launch: JobLaunch) -> LocalRun:
        with self._log_file(launch) as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                MODULES[launch.kind],
                *launch.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, **launch.env},
                preexec_fn=die_with_parent,
            )
        return LocalRun(process, self._log_path(launch))
