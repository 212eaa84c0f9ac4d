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
from pathlib import Path

import pytest
from serving_fixtures import Serving

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
RUNNABLE = re.compile(r"^<!-- runnable:[^>]*-->\n```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
LOCAL_BFF = "http://127.0.0.1:8080"


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
