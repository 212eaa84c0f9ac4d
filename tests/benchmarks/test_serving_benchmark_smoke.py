"""The serving benchmark's measurements, seconds long, on the test session's platform: so that
`benchmarks/serving/run.py` does not rot between its full runs (`make bench`). No timing is asserted:
each part must measure something, without errors, and the report must be written from it."""

from pathlib import Path

import pytest

from benchmarks.serving import run as bench
from devstack.triton_home import ensure_triton_home

pytestmark = pytest.mark.integration

# wrk measures whole seconds.
SECONDS = 1


def test_every_part_of_the_serving_benchmark_measures_and_reports(serving, infra_dir, stack_settings, tmp_path):
    env = serving.env
    [onnx] = Path(env["MODEL_REPOSITORY"]).glob(f"{env['TRITON_MODEL_NAME']}/*/model.onnx")
    run: dict = {"command": "smoke", "load_at_start": "", "took_s": 0.0}
    run |= {"model_name": env["TRITON_MODEL_NAME"], "model_version": int(onnx.parent.name)}
    run["ort"] = [bench.bench_onnxruntime(onnx, batch, duration_s=SECONDS) for batch in (1, 256)]
    home = ensure_triton_home(infra_dir / "triton-home", stack_settings.triton_venv)
    triton = bench.TritonTarget(env["TRITON_MODEL_NAME"], env["TRITON_GRPC_URL"], home.env())
    run["perf_analyzer"] = [
        bench.bench_perf_analyzer(triton, batch, 1, tmp_path, measurement_ms=300) for batch in (1, 256)
    ]
    run["pieces"] = bench.bench_request_path(rows=16, repeat=2)
    run["triton_clients"] = bench.bench_triton_clients(
        env["TRITON_GRPC_URL"], env["TRITON_MODEL_NAME"], calls=40, rounds=2
    )
    # The platform's applicants start at FIRST_ID; the first 100 are in the online store.
    run["bff"] = bench.bff_loads(serving.bff_url, SECONDS, warmup_s=0, applicants=100)
    with bench.baseline_server(onnx, tmp_path) as (url, size, pid):
        run["baseline_model"] = size
        run["versus"] = {"baseline": bench.versus_baseline_loads(url, SECONDS, "baseline", {"server": pid}, warmup_s=0)}
    bff_pid = serving.bff.pid()
    run["versus"]["BFF, logging on, 1 worker"] = bench.versus_baseline_loads(
        serving.bff_url, SECONDS, "BFF, logging on, 1 worker", {"server": bff_pid, "triton": None}, warmup_s=0
    )

    loads = run["bff"] + [m.load for results in run["versus"].values() for m in results]
    failed = [load for load in loads if load.requests == 0 or load.errors]
    assert not failed, failed
    assert all(r["rows_per_s"] > 0 for r in run["ort"] + run["perf_analyzer"])
    assert size["trees"] > 0
    assert {(r["client"], r["batch"]) for r in run["triton_clients"] if r["calls"] == 40} == {
        (client, batch) for client in ("tritonclient.grpc.aio", "generated stub (bff.triton)") for batch in (1, 256)
    }
    assert all(m.cpu_s["server"] > 0 for results in run["versus"].values() for m in results)
    text = bench.report(run)
    assert "## Targets" in text
    # Three body forms against Triton, /predict's overhead, the store's cost, and two ratios to the baseline.
    verdicts = [line for line in text.splitlines() if line.endswith(("| **met** |", "| **not met** |"))]
    assert len(verdicts) == 7, text
