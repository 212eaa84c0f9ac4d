"""Every README block marked runnable works as printed, against this test session's platform.

A block is runnable when the line before its ```bash fence is ``<!-- runnable: … -->``. It runs with
bash (``-e``: every command must succeed) with ``.venv/bin`` first on PATH (what ``source
.venv/bin/activate`` gives) and the platform's environment of this session; the only rewrite is the
local stack's BFF address, which becomes the address of this session's BFF.
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_fixtures import Serving

from devstack.components import app_daemon
from devstack.processes import free_port
from devstack.settings import Settings as DevstackSettings

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
RUNNABLE = re.compile(r"^<!-- runnable:[^>]*-->\n```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
LOCAL_BFF = "http://127.0.0.1:8080"


@pytest.fixture(scope="module", autouse=True)
def job_worker(serving: Serving, s3_server, tmp_path_factory) -> Iterator[None]:
    """What `make demo` runs besides the BFF for the jobs blocks: the job worker, and the bucket they write to."""
    bucket = DevstackSettings.model_fields["scores_bucket"].default
    s3_server.client().create_bucket(Bucket=bucket)
    logs = tmp_path_factory.mktemp("readme-job-worker")
    env = {**serving.env, "JOB_WORKER_METRICS_PORT": str(free_port()), "JOB_LOG_DIR": str(logs / "jobs")}
    worker = app_daemon("job_worker", "job_worker", logs / "job_worker.log", env=env, die_with_parent=True).start()
    try:
        yield
    finally:
        worker.stop()


def runnable_blocks() -> list[str]:
    return RUNNABLE.findall(README.read_text())


def test_the_readme_has_runnable_blocks() -> None:
    blocks = runnable_blocks()
    assert blocks
    assert all(LOCAL_BFF in block or "mlops " in block for block in blocks)


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda block: block.strip().splitlines()[0][:60])
def test_readme_block_runs_as_printed(block: str, serving: Serving) -> None:
    env = {
        **os.environ,
        **serving.env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "BFF_URL": serving.bff_url,
    }
    script = block.replace(LOCAL_BFF, serving.bff_url)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        cwd=README.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
