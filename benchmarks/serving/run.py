"""Serving benchmark: in-process ONNX Runtime vs direct Triton (perf_analyzer) vs the BFF, in one run.

    .venv/bin/python benchmarks/serving/run.py --out benchmarks/results/serving.md

Brings a whole platform up on free ports (``benchmarks/stack.py``), measures, tears it down, and
writes a markdown report. Targets: BFF ``/predict/batch`` (256 rows, each body form) rows/s >= 0.5 x direct
Triton batch-256 rows/s; BFF ``/predict`` p50 - direct Triton p50 (batch 1, concurrency 1) <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from benchmarks.loadgen import LoadResult, run_load
from benchmarks.stack import (
    ROOT,
    BenchPlatform,
    command_line,
    ensure_perf_analyzer,
    feature_bodies,
    load_average,
    machine_summary,
    work_dir,
    write_report,
)

log = logging.getLogger("benchmarks.serving")
PIECES_ROWS = 256


# -- (a) in-process ONNX Runtime ------------------------------------------------------------------
def bench_onnxruntime(onnx_path: Path, batch: int, duration_s: float = 3.0) -> dict[str, float]:
    import onnxruntime as ort

    from mlops_common.features import FEATURE_NAMES, MODEL_INPUT, MODEL_OUTPUT

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rows = np.array([[b[n] for n in FEATURE_NAMES] for b in feature_bodies(batch)], dtype=np.float32)
    for _ in range(20):
        session.run([MODEL_OUTPUT], {MODEL_INPUT: rows})
    latencies = []
    deadline = time.perf_counter() + duration_s
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        session.run([MODEL_OUTPUT], {MODEL_INPUT: rows})
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {
        "batch": batch,
        "rows_per_s": len(latencies) * batch / elapsed,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
    }


# -- (b) direct Triton with perf_analyzer ---------------------------------------------------------
def bench_perf_analyzer(platform: BenchPlatform, batch: int, concurrency: int, tmp: Path) -> dict[str, float]:
    out = tmp / f"pa_b{batch}_c{concurrency}.csv"
    argv = [
        str(ensure_perf_analyzer()),
        "-m",
        platform.model_name,
        "-u",
        platform.triton.grpc_url,
        "-i",
        "grpc",
        "-b",
        str(batch),
        "--concurrency-range",
        str(concurrency),
        "--measurement-interval",
        "3000",
        "--stability-percentage",
        "25",
        "--max-trials",
        "6",
        "-f",
        str(out),
    ]
    result = subprocess.run(argv, env=platform.triton_home.env(), capture_output=True, text=True, timeout=240)
    if result.returncode != 0:
        # Unstable measurements still print a result; keep it, flagged.
        log.warning("perf_analyzer b%d c%d exited %d: %s", batch, concurrency, result.returncode, result.stdout[-800:])
    with out.open() as handle:
        row = next(csv.DictReader(handle))
    return {
        "batch": batch,
        "concurrency": concurrency,
        # perf_analyzer counts inferences: a batch-256 request is 256 of them, i.e. rows.
        "rows_per_s": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
        "stable": result.returncode == 0,
        "command": shlex.join(["perf_analyzer", *argv[1:-2]]),
    }


# -- (d) where a 256-row /predict/batch spends its time outside Triton (in-process) ------------------
def split_form(rows: list[dict]) -> dict:
    from mlops_common.features import FEATURE_NAMES

    return {"columns": list(FEATURE_NAMES), "data": [[row[name] for name in FEATURE_NAMES] for row in rows]}


def v2_form(rows: list[dict]) -> dict:
    from mlops_common.features import FEATURE_NAMES

    n = len(rows)
    return {
        "inputs": [
            {"name": name, "shape": [n], "datatype": "FP64", "data": [row[name] for row in rows]}
            for name in FEATURE_NAMES
        ]
    }


def bench_request_path(rows: int = 256, repeat: int = 200) -> list[tuple[str, float]]:
    """The BFF's per-request work for ``rows`` rows outside Triton, step by step: reading the body into
    columns (``bff.bodies``) in each form, and writing the answer; then, for comparison, what FastAPI and
    pydantic did per row before (``json.loads`` + ``list[PredictRequest]``, 256 ``Prediction`` objects
    validated and dumped)."""
    import json
    import uuid

    import orjson
    from pydantic import TypeAdapter

    from bff.bodies import parse_batch
    from bff.schemas import BatchPrediction, Prediction, PredictRequest

    bodies = feature_bodies(rows)
    raw = json.dumps(bodies).encode()
    raw_split = json.dumps(split_form(bodies)).encode()
    raw_v2 = json.dumps(v2_form(bodies)).encode()
    request_adapter = TypeAdapter(list[PredictRequest])
    response_adapter = TypeAdapter(BatchPrediction)
    probabilities = np.full(rows, 0.1, dtype=np.float32)

    def answer() -> bytes:
        request_id = uuid.uuid4().hex
        decisions = np.where(probabilities >= 0.5, "reject", "approve").tolist()
        values = probabilities.tolist()
        return orjson.dumps(
            {
                "predictions": [
                    {
                        "request_id": f"{request_id}-{i}",
                        "probability": values[i],
                        "decision": decisions[i],
                        "threshold": 0.5,
                        "model_name": "credit_default",
                        "model_version": "1",
                        "model_role": "champion",
                        "features_from_store": [],
                        "missing_features": [],
                    }
                    for i in range(rows)
                ]
            }
        )

    def before_answer() -> bytes:
        built = BatchPrediction(
            predictions=[
                Prediction(
                    request_id=uuid.uuid4().hex,
                    probability=0.1,
                    decision="approve",
                    threshold=0.5,
                    model_name="credit_default",
                    model_version="1",
                    model_role="champion",
                    features_from_store=[],
                    missing_features=[],
                )
                for _ in range(rows)
            ]
        )
        return response_adapter.dump_json(response_adapter.validate_python(built))

    steps = [
        ("body -> columns: list of objects (bff.bodies)", lambda: parse_batch(raw, rows)),
        ('body -> columns: pandas "split"', lambda: parse_batch(raw_split, rows)),
        ("body -> columns: KServe v2 inputs", lambda: parse_batch(raw_v2, rows)),
        ("answer: dicts from the arrays + orjson.dumps", answer),
        (
            "before: json.loads + validate list[PredictRequest]",
            lambda: request_adapter.validate_python(json.loads(raw)),
        ),
        (f"before: {rows} Prediction objects, validated + dumped", before_answer),
    ]
    timings = []
    for name, step in steps:
        step()
        started = time.perf_counter()
        for _ in range(repeat):
            step()
        timings.append((name, (time.perf_counter() - started) / repeat * 1000))
    return timings


# -- (c) the BFF ----------------------------------------------------------------------------------
async def bench_bff(url: str, duration_s: float) -> list[LoadResult]:
    singles = feature_bodies(1000)
    batch = feature_bodies(256, seed=8)
    results = []
    for concurrency in (1, 4, 16):
        results.append(
            await run_load(
                f"{url}/predict",
                lambda i: singles[i % len(singles)],
                concurrency=concurrency,
                max_requests=50_000,
                duration_s=duration_s,
                warmup_requests=100,
                label="/predict",
            )
        )
    forms = [("list of objects", batch), ("split", split_form(batch)), ("KServe v2", v2_form(batch))]
    for name, body in forms:
        for concurrency in (1, 2):
            results.append(
                await run_load(
                    f"{url}/predict/batch",
                    lambda i, body=body: body,
                    concurrency=concurrency,
                    rows_per_request=256,
                    max_requests=5_000,
                    duration_s=duration_s,
                    warmup_requests=10,
                    label=f"/predict/batch (256 rows, {name})",
                )
            )
    return results


# -- report ---------------------------------------------------------------------------------------
def report(
    command: str,
    platform: BenchPlatform,
    ort_rows,
    pa_rows,
    bff_rows: list[LoadResult],
    took_s: float,
    load_at_start: str,
    pieces: list[tuple[str, float]],
) -> str:
    machine = machine_summary()
    pa256 = next(r for r in pa_rows if r["batch"] == 256 and r["concurrency"] == 1)
    pa1 = next(r for r in pa_rows if r["batch"] == 1 and r["concurrency"] == 1)
    batches = [r for r in bff_rows if r.rows_per_request == 256 and r.concurrency == 1]
    bff_single = next(r for r in bff_rows if r.rows_per_request == 1 and r.concurrency == 1)
    overhead = bff_single.p50_ms - pa1["p50_ms"]
    ok = {True: "**met**", False: "**not met**"}
    lines = [
        "# Serving benchmark",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        f"- Command: `{command}` (whole run up to the report, platform start included: {took_s:.0f} s)",
        f"- Machine: {machine['nproc']} CPUs (`nproc`; shared cores, not dedicated: numbers move by 10-20 % "
        f"between runs), {machine['cpu']}, Python {machine['python']}, no GPU",
        f"- Model: Triton model `{platform.model_name}` version {platform.model_version} (the MLflow champion trained "
        "on synthetic data in this run), ONNX served by Triton 2.51 **Python backend** (ONNX Runtime inside "
        "`model.py`, 1 instance, 1 intra-op thread, dynamic batching; the native onnxruntime backend exists only in "
        "the NGC image)",
        "- Everything (load generator, BFF, Triton, Redis) shares the same cores, so the client's CPU "
        "competes with the servers'. Load average (1/5/15 min) before the run: "
        f"{load_at_start}; after measuring: {machine['loadavg']} (other sessions' work on the machine shows here).",
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "|---|---|---|",
        *(
            f"| BFF `{r.label}`, c=1, rows/s >= 0.5 x direct Triton batch-256 (c=1) rows/s "
            f"| {r.rows_per_s:,.0f} / {pa256['rows_per_s']:,.0f} = **{r.rows_per_s / pa256['rows_per_s']:.2f}** "
            f"| {ok[r.rows_per_s / pa256['rows_per_s'] >= 0.5]} |"
            for r in batches
        ),
        f"| BFF `/predict` p50 - direct Triton p50 (batch 1, c=1) <= 2 ms "
        f"| {bff_single.p50_ms:.2f} - {pa1['p50_ms']:.2f} = **{overhead:.2f} ms** | {ok[overhead <= 2.0]} |",
        "",
        "## (a) In-process ONNX Runtime (1 thread, no server)",
        "",
        "| batch | rows/s | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|",
        *(f"| {r['batch']} | {r['rows_per_s']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |" for r in ort_rows),
        "",
        "## (b) Direct Triton, perf_analyzer 2.51 over gRPC",
        "",
        "| batch | concurrency | rows/s | p50 ms | p99 ms | stable |",
        "|---:|---:|---:|---:|---:|---|",
        *(
            f"| {r['batch']} | {r['concurrency']} | {r['rows_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {'yes' if r['stable'] else 'no (last window)'} |"
            for r in pa_rows
        ),
        "",
        f"Command shape: `{pa_rows[0]['command']} -f out.csv` (with `-b` and `--concurrency-range` varied).",
        "",
        "## (c) BFF over HTTP (aiohttp closed-loop load generator, body with all features: no online-store read)",
        "",
        "| endpoint | concurrency | requests | errors | req/s | rows/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| `{r.label}` | {r.concurrency} | {r.requests:,} | {r.errors} | {r.requests_per_s:,.0f} "
            f"| {r.rows_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |"
            for r in bff_rows
        ),
        "",
        f"## (d) Where a {PIECES_ROWS}-row `/predict/batch` spends its time outside Triton (in-process, no server)",
        "",
        "| step | ms per request |",
        "|---|---:|",
        *(f"| {name} | {ms:.2f} |" for name, ms in pieces),
        "",
        "BFF: one uvicorn worker, inference logging off (`INFERENCE_LOGGING_ENABLED=false`; its cost is measured "
        "separately in `inference_logging.md`), gRPC to Triton.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.md")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per BFF load level")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and state under benchmarks/results/tmp")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = command_line("benchmarks/serving/run.py")
    started = time.monotonic()
    load_at_start = load_average()
    ensure_perf_analyzer()
    with work_dir("serving-", keep=args.keep_work) as work, BenchPlatform.up(work) as platform:
        log.info("champion %s v%d served; measuring", platform.model_name, platform.model_version)
        ort_rows = [bench_onnxruntime(platform.onnx_path, b) for b in (1, 256)]
        log.info("onnxruntime: %s", ort_rows)
        pa_rows = [bench_perf_analyzer(platform, b, c, work) for b, c in ((1, 1), (1, 2), (256, 1))]
        log.info("perf_analyzer: %s", pa_rows)
        pieces = bench_request_path(PIECES_ROWS)
        log.info("request path: %s", pieces)
        bff = platform.start_bff("bff", inference_logging=False)
        bff_rows = asyncio.run(bench_bff(bff.url, args.duration))
        for r in bff_rows:
            log.info("%s c=%d: %.0f rows/s p50 %.2f p99 %.2f", r.label, r.concurrency, r.rows_per_s, r.p50_ms, r.p99_ms)
        took = time.monotonic() - started
        text = report(command, platform, ort_rows, pa_rows, bff_rows, took, load_at_start, pieces)
    write_report(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
