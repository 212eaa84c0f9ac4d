"""`make analyze` in seconds (`run.py --smoke`): every step of it on a tiny model, so the script cannot rot.

Model repository built by the script itself, Model Analyzer over two configurations (Triton's plain default
and the current ``TritonModelSpec``) at two concurrencies, the perf_analyzer side-by-side check, the report
and the PNG. Model Analyzer comes from ``.tools/model-analyzer``, which `make test` installs.
"""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "model_analyzer" / "run.py"
MODEL_ANALYZER = ROOT / ".tools" / "model-analyzer" / "bin" / "model-analyzer"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_smoke_run_measures_the_plain_default_and_the_current_spec_and_writes_report_and_plot(tmp_path):
    if not MODEL_ANALYZER.exists():
        pytest.fail(f"{MODEL_ANALYZER} is missing: `make test` (or `make analyze`) installs it")
    result = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--export-path", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    with (tmp_path / "results" / "metrics-model-inference.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    measured = {(row["Model Config Path"], int(row["Concurrency"])) for row in rows}
    assert measured == {(f"credit_default_config_{n}", c) for n in ("default", "0") for c in (1, 4)}
    assert all(float(row["Throughput (infer/sec)"]) > 0 for row in rows)

    report = (tmp_path / "model_analyzer.md").read_text()
    assert "| `config_default` | plain default | none | 1 | 1 |" in report
    # The current spec is the only dynamic-batching candidate, so it is also the golden one.
    assert "| `config_0` | current spec + golden |" in report
    assert "golden ÷ Triton's plain default" in report
    assert (tmp_path / "model_analyzer_throughput_vs_p99.png").read_bytes().startswith(PNG_SIGNATURE)
