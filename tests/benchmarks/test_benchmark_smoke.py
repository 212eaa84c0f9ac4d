"""Every benchmark's measurements, seconds long, on the test session's platform (one serving fixture for
them all), so that `benchmarks/serving/` (`run.py`, `call_merging.py`), `benchmarks/inference_logging/`
(`run.py`, `message_size.py`, `table.py`) do not rot between their full runs (`make bench`). No timing is
asserted: each part must measure something, without errors, and its report (section) must be written from it."""

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.batch_scoring import run as batch_scoring
from benchmarks.inference_logging import message_size, table
from benchmarks.inference_logging import run as logging_cost
from benchmarks.serving import call_merging
from benchmarks.serving import run as bench
from benchmarks.stack import Bff, settings_from
from devstack.triton_home import ensure_triton_home
from log_worker.settings import Settings as LogWorkerSettings

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
    triton = bench.TritonTarget(env["TRITON_MODEL_NAME"], env["TRITON_GRPC_URL"], home.env(), env["TRITON_HTTP_URL"])
    levels = ((1, 1), *((256, c) for c in bench.BATCH_CONCURRENCIES))
    run["perf_analyzer"] = bench.bench_direct_triton(triton, levels, tmp_path, measurement_ms=300)
    assert [(r["batch"], r["concurrency"], r["inputs"]) for r in run["perf_analyzer"]] == [
        (batch, concurrency, inputs) for batch, concurrency in levels for inputs in ("rows", "random")
    ]
    run["pieces"] = bench.bench_request_path(rows=16, repeat=2)
    run["triton_clients"] = bench.bench_triton_clients(
        env["TRITON_HTTP_URL"], env["TRITON_GRPC_URL"], env["TRITON_MODEL_NAME"], calls=40, rounds=2
    )
    # The platform's applicants start at FIRST_ID; the first 100 are in the online store.
    run["bff"] = bench.bff_loads(serving.bff_url, SECONDS, warmup_s=0, applicants=100)
    # Batches of 16 rows: the baseline loops over them, and a 256-row one may take the whole second here.
    with bench.baseline_server(onnx, tmp_path) as (url, size, pid):
        run["baseline_model"] = size
        run["versus"] = {
            "baseline": bench.versus_baseline_loads(
                url, SECONDS, "baseline", {"server": pid}, warmup_s=0, batch_rows=16
            )
        }
    bff_pid = serving.bff.pid()
    run["versus"]["BFF, logging on, 1 worker"] = bench.versus_baseline_loads(
        serving.bff_url,
        SECONDS,
        "BFF, logging on, 1 worker",
        {"server": bff_pid, "triton": None},
        warmup_s=0,
        batch_rows=16,
    )

    run["profiles"] = [
        bench.profile_bff(bff_pid, serving.bff_url, load, SECONDS, tmp_path / f"bff-{i}.pyspy")
        for i, load in enumerate((bench.SINGLE_PROFILE, bench.BATCH_PROFILE))
    ]
    # A second of sampling: what it holds varies; that each profile has samples and reports every step does not.
    for profile in run["profiles"]:
        assert sum(share for _, share in profile["areas"]) == pytest.approx(1.0)
        assert [step for step, _ in profile["steps"]] == [step for _, step in bench.PROFILE_STEPS]

    loads = run["bff"] + [m.load for results in run["versus"].values() for m in results]
    failed = [load for load in loads if load.requests == 0 or load.errors]
    assert not failed, failed
    assert all(r["rows_per_s"] > 0 for r in run["ort"] + run["perf_analyzer"])
    assert all(r["compute_us"] > 0 for r in run["perf_analyzer"])
    assert size["trees"] > 0
    clients = {r["client"] for r in run["triton_clients"]}
    assert len(clients) == 4
    assert any(c.startswith("platform client") for c in clients)
    assert {(r["client"], r["batch"]) for r in run["triton_clients"] if r["calls"] == 40} == {
        (client, batch) for client in clients for batch in (1, 256)
    }
    assert all(m.cpu_s["server"] > 0 for results in run["versus"].values() for m in results)
    text = bench.report(run)
    assert "## Targets" in text
    assert f"]({bench.PLOT_NAME})" in text
    # The plot: every variant of both panels with a point per concurrency measured, written as a PNG.
    panels = bench.plot_variants(run)
    direct = {f"direct Triton (perf_analyzer, {inputs})" for inputs in bench.PA_INPUTS.values()}
    assert direct | {"baseline", "BFF, logging off: /predict"} <= set(panels["single rows"])
    assert len(panels["batches"]["BFF, logging off: /predict/batch (256 rows, split)"]) == 2
    plot = tmp_path / bench.PLOT_NAME
    bench.plot_throughput_vs_p99(run, plot)
    assert plot.read_bytes().startswith(b"\x89PNG")
    # Three body forms against Triton at each batch concurrency, /predict's overhead, the store's cost, and the
    # ratios to the baseline (/predict at c=8, the batch at each batch concurrency).
    verdicts = [line for line in text.splitlines() if line.endswith(("| **met** |", "| **not met** |"))]
    batch_levels = len(bench.BATCH_CONCURRENCIES)
    assert len(verdicts) == 3 * batch_levels + 2 + 1 + batch_levels, text
    assert all(f"(c={c})" in text for c in bench.BATCH_CONCURRENCIES)


def test_call_merging_benchmark_alternates_the_settings_and_reports(serving, triton_server):
    # Two of the settings on the session's one BFF: the phases, the CPU, the Triton requests and the report.
    target = Bff("bff", serving.bff_url, serving.metrics_url, serving.bff)
    values = call_merging.VALUES[:2]
    phases = call_merging.alternate(
        dict.fromkeys(values, target), triton_server.daemon.pid(), rounds=2, duration_s=SECONDS, warmup_s=0
    )
    assert len(phases) == 2 * len(values) * len(call_merging.CONCURRENCIES)
    assert [p.value for p in phases[:2]] == list(values)
    assert [p.value for p in phases[-2:]] == list(reversed(values))
    assert all(p.load.requests > 0 and p.load.errors == 0 for p in phases), phases
    assert all(p.cpu_s["BFF"] > 0 and p.cpu_s["Triton"] > 0 for p in phases), phases
    # Every prediction's rows went to Triton in some request: at least as many rows as requests measured.
    assert all(0 < p.triton_requests <= p.triton_rows and p.triton_rows >= p.load.requests for p in phases), phases
    text = call_merging.report(phases, 2, SECONDS, 0.0, "smoke", "")
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(rows) == len(values) * len(call_merging.CONCURRENCIES), text
    assert "rows per Triton request" in text


def test_logging_cost_alternates_on_and_off_phases_and_accounts_each_process(serving, triton_server):
    # The serving BFF stands in for both (logging on and off), Triton for itself, the rest for none (0 s):
    # the alternation, the CPU accounting per process and the report run.
    urls = dict.fromkeys((True, False), serving.bff_url)
    pids = dict.fromkeys(logging_cost.PROCESSES) | dict.fromkeys(("BFF on", "BFF off"), serving.bff.pid())
    pids["Triton"] = triton_server.daemon.pid()
    phases = logging_cost.alternate(urls, pids, rounds=2, concurrency=2, duration_s=SECONDS, settle_s=0, warmup_s=0)
    assert [phase.logging_on for phase in phases] == [True, False, False, True]
    assert all(p.result.requests > 0 and p.result.errors == 0 for p in phases), phases
    assert all(p.cpu_s["BFF"] > 0 and p.cpu_s["Triton"] > 0 and p.cpu_s["log worker"] == 0 for p in phases), phases
    pooled = logging_cost.pooled([p.result for p in phases if p.logging_on])
    assert pooled.requests == sum(p.result.requests for p in phases if p.logging_on)
    platform = SimpleNamespace(model_name=serving.env["TRITON_MODEL_NAME"], model_version=1)
    delivered = dict.fromkeys(("enqueued", "confirmed", "spooled", "dropped", "written"), 0.0)
    text = logging_cost.report("smoke", platform, phases, phases[:2], 2, SECONDS, delivered, 0.0, "")
    cpu_rows = [line for line in text.splitlines() if line.startswith(("| BFF |", "| Triton |", "| all of them |"))]
    assert len(cpu_rows) == 3, text
    control_rows = [line for line in text.splitlines() if line.startswith(("| running (above) |", "| paused |"))]
    assert len(control_rows) == 2, text
    assert sum("(worker paused)" in line for line in text.splitlines()) == 2, text


def test_the_control_pauses_the_log_worker_only_while_it_measures():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with logging_cost.paused(sleeper.pid):
            assert _state_becomes(sleeper.pid, lambda state: state == "T")  # stopped
        assert _state_becomes(sleeper.pid, lambda state: state != "T")  # running or sleeping again
    finally:
        sleeper.kill()
        sleeper.wait()


def _state_becomes(pid: int, wanted, timeout_s: float = 10.0) -> bool:
    """Whether the process' state letter (from /proc: the field after the parenthesised name) is one that
    ``wanted`` accepts within ``timeout_s``: a signal takes effect when the process is next scheduled."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        if wanted(state) or time.monotonic() > deadline:
            return wanted(state)
        time.sleep(0.01)


def test_message_size_benchmark_alternates_the_settings_and_reports(serving):
    # Both values on the session's one BFF: the phases, their CPU and the report, not the two start-ups.
    target = Bff("bff", serving.bff_url, serving.metrics_url, serving.bff)
    sections = []
    for comparison in message_size.COMPARISONS:
        targets = dict.fromkeys((comparison.before, comparison.now), target)
        shared = dict.fromkeys(message_size.PROCESSES[1:])
        phases = message_size.alternate(comparison, targets, shared, rounds=2, duration_s=SECONDS, pause_s=0)
        before, now = comparison.before, comparison.now
        assert [p.value for p in phases] == [before, now, now, before]
        assert all(p.load.requests > 0 and p.load.errors == 0 and p.cpu_s["BFF"] > 0 for p in phases)
        assert all(p.cpu_s["log worker"] == 0 for p in phases)  # no process given: nothing counted
        assert all(p.enqueued >= p.load.requests * comparison.rows for p in phases)  # the warm-up too
        sections.append(message_size.section(comparison, phases, 2, SECONDS))
    text = message_size.report(sections, 2, SECONDS, 0.0, "smoke", "")
    assert "| 2000 |" in text
    assert "| 0.05 |" in text
    assert "2000 ÷ 500: throughput" in text
    assert "0.25 ÷ 0.05: throughput" in text
    assert "50000 ÷ 10000: throughput" in text
    assert "records spooled" in text


def test_table_write_throughput_merges_compacts_and_reads_back(serving, s3_server):
    settings = settings_from(LogWorkerSettings, {**serving.env, "LOGS_BUCKET": s3_server.new_bucket("logs")})
    results = {
        name: table.measure_writes(
            settings.model_copy(update={"logs_prefix": f"smoke-{i}"}), "smoke_model", "1", 3, 1, 50, 5.0, merge
        )
        for i, (name, merge) in enumerate(table.MERGES.items())
    }
    for result in results.values():
        assert [stretch.table_rows for stretch in result.stretches][-1] == 4 * 50
        assert all(stretch.redelivered_inserted == 0 for stretch in result.stretches)
    section = "\n".join(table.write_section(results, batch_rows=50, rows_per_s=5.0))
    assert "## 1. Table write throughput" in section
    assert all(f"**{name}**" in section for name in table.MERGES)
    writes, bytes_per_row = table.measure_batch_sizes(
        settings.model_copy(update={"logs_prefix": "smoke-sizes"}), "smoke_model", "1", (10, 40), repeats=2
    )
    assert sorted((w.rows, w.encoding) for w in writes) == sorted(
        (rows, encoding) for rows in (10, 40) for encoding in table.ENCODINGS for _ in range(2)
    )
    assert bytes_per_row.keys() == table.ENCODINGS.keys()
    assert all(size > 0 for size in bytes_per_row.values())
    sizes_section = "\n".join(table.batch_size_section(writes, bytes_per_row))
    assert "| 40 | dictionaries up to 8 KiB (now) |" in sizes_section
    assert "Now ÷ before at 40 rows: CPU per write" in sizes_section


def test_batch_scoring_benchmark_measures_the_job_and_perf_analyzer_and_reports(
    serving, infra_dir, stack_settings, tmp_path
):
    env = serving.env
    home = ensure_triton_home(infra_dir / "triton-home", stack_settings.triton_venv)
    triton = bench.TritonTarget(env["TRITON_MODEL_NAME"], env["TRITON_GRPC_URL"], home.env())
    run = {"command": "smoke", "load_at_start": "", "took_s": 0.0, "model_name": "m", "model_version": 1}
    run |= batch_scoring.measure(env, triton, 3_000, [2], tmp_path, pa_concurrency=(1,), measurement_ms=300)
    [job] = run["jobs"]
    assert job["rows"] == 3_000
    assert job["rows_per_s"] > 0
    assert job["peak_rss_mib"] > 0
    assert [r["when"] for r in run["perf_analyzer"]] == ["before", "after"]
    text = batch_scoring.report(run)
    assert "| 2 | 3,000 |" in text
    assert "job rows/s >= 0.8 x perf_analyzer" in text


def test_py_spy_raw_stacks_are_read_even_where_a_frame_name_breaks_the_line():
    text = "main (a.py:1);f (b.py:2) 7\nmain (a.py:1);g[Annotated[int,\nAny]] (c.py:3) 2\nh (d.py:4) 1\n"
    assert list(bench._raw_stacks(text)) == [
        ("main (a.py:1);f (b.py:2)", 7),
        ("main (a.py:1);g[Annotated[int,\nAny]] (c.py:3)", 2),
        ("h (d.py:4)", 1),
    ]


def test_the_profile_counts_a_step_once_per_sample_whose_stack_holds_it():
    steps = dict(bench.PROFILE_STEPS)
    body, triton, outer = steps[("parse_single", "parse_batch")], steps[("Router.score",)], bench.PROFILE_STEPS[-1][1]
    middleware = "PredictionTrafficMiddleware.__call__ (bff/metrics.py:220)"
    raw = (
        f"run (asyncio/runners.py:118);{middleware};parse_batch (bff/bodies.py:138);_plain (bff/bodies.py:167) 6\n"
        f"run (asyncio/runners.py:118);{middleware};Router.score (bff/routing.py:129);"
        "Router.score (bff/routing.py:129);send (mlops_common/triton_client.py:107) 3\n"
        "run (asyncio/runners.py:118);Server.main_loop (uvicorn/server.py:240) 1\n"
    )
    summary = bench.profile_summary(raw)
    shares = dict(summary["steps"])
    # A step's function twice in one stack (recursion, a wrapper) counts its samples once.
    assert (shares[body], shares[triton], shares[outer]) == (0.6, 0.3, 0.9)
    assert shares["answer: a dict per row (bff.app)"] == 0
    assert dict(summary["areas"]) == {
        "BFF code (services/bff)": 0.9,
        "HTTP server (uvicorn, httptools, h11)": 0.1,
    }
    assert summary["functions"][0] == ("_plain (bff/bodies.py:167)", 0.6)
