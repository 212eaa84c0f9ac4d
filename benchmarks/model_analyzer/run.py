"""Model Analyzer search for the credit_default serving config, then a side-by-side check (see README.md).

    make analyze    # = .venv/bin/python benchmarks/model_analyzer/run.py
    .venv/bin/python benchmarks/model_analyzer/run.py --smoke --export-path /tmp/ma    # seconds; the tests run it

1. Builds a model repository of its own: a model of the serving shape (10 float32 features in, probabilities
   [n, 2] out) fitted and exported as the trainer does (or ``--onnx``, e.g. the demo's champion), served by
   Triton's Python backend. Its config.pbtxt is Triton's plain default (no dynamic batching, one instance):
   Model Analyzer measures the repository's config as ``config_default``.
2. Runs ``model-analyzer profile`` (from ``.tools/model-analyzer``) over ``config.yaml``'s grid, with the
   current ``TritonModelSpec``'s values added to it.
3. Measures the best configurations at the highest concurrency within the p99 budget again, together with
   the plain default and the current spec, side by side in one server with perf_analyzer (alternating
   rounds), and takes the fastest within the budget as the golden configuration.
4. Writes the report and a PNG of throughput vs p99 per configuration.

Everything except the report and the PNG goes to ``--export-path`` (git-ignored by default).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml

from benchmarks.model_analyzer.report import RunFacts, config_roles, plot_throughput_vs_p99, render_report
from benchmarks.model_analyzer.results import read_candidates, read_measurements, shortlist
from benchmarks.model_analyzer.side_by_side import RoundSettings, measure_side_by_side, pick_golden
from benchmarks.stack import ROOT, command_line, load_average, machine_summary
from devstack.processes import free_port
from devstack.settings import Settings
from devstack.triton_home import TritonHome, ensure_triton_home
from mlops_common.triton_config import TritonModelSpec, TritonRuntime, model_config
from model_sync.repository import ModelRepository

HERE = Path(__file__).resolve().parent
MODEL_ANALYZER = ROOT / ".tools" / "model-analyzer" / "bin" / "model-analyzer"
RESULTS = ROOT / "benchmarks" / "results"
# What Model Analyzer writes under the export path; removed first, or it resumes from its checkpoint.
MODEL_ANALYZER_OUTPUTS = ("checkpoints", "output_model_repository", "results", "plots", "reports")

# The smoke run: the current spec alone beside the plain default, two concurrencies, short windows.
SMOKE_CONCURRENCY = [1, 4]
SMOKE_PERF_ANALYZER_FLAGS = {
    "measurement-mode": "time_windows",
    "measurement-interval": 300,
    "stability-percentage": 100,
    "max-trials": 3,
}
SMOKE_ROUNDS = RoundSettings(rounds=1, measurement_interval_ms=300)
FULL_ROUNDS = RoundSettings(rounds=2, measurement_interval_ms=2000)
# Candidates from the search that are measured again side by side (besides the plain default and the current spec).
SHORTLIST_SIZE = 3
# Rows to fit the analysed model on: the trainer's defaults on this many rows give a model of realistic size.
TRAINING_ROWS = {False: 20_000, True: 300}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--onnx", type=Path, help="the model to analyse (default: one fitted here, as the trainer fits)"
    )
    parser.add_argument("--export-path", type=Path, default=RESULTS / "tmp" / "model_analyzer")
    parser.add_argument("--out", type=Path, help="the report (default: benchmarks/results/model_analyzer.md)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run of every step (for the tests)")
    parser.add_argument("--model-analyzer", type=Path, default=MODEL_ANALYZER, help="the model-analyzer executable")
    args = parser.parse_args()
    out = args.out or (args.export_path / "model_analyzer.md" if args.smoke else RESULTS / "model_analyzer.md")

    if not args.model_analyzer.exists():
        print(f"{args.model_analyzer} is missing: `make analyze` installs Model Analyzer into .tools/model-analyzer")
        return 2
    started = time.monotonic()
    facts = RunFacts(
        command=command_line("benchmarks/model_analyzer/run.py"),
        started=datetime.now(UTC),
        machine=machine_summary(),
        load_before=load_average(),
        smoke=args.smoke,
    )
    settings = Settings()
    home = ensure_triton_home(settings.triton_home, settings.triton_venv)
    export = args.export_path.resolve()
    for name in (*MODEL_ANALYZER_OUTPUTS, "model_repository", "side_by_side"):
        shutil.rmtree(export / name, ignore_errors=True)
    export.mkdir(parents=True, exist_ok=True)

    current = TritonModelSpec()
    repository = export / "model_repository"
    facts.model = build_repository(repository, current, args.onnx, smoke=args.smoke)
    perf_analyzer = args.model_analyzer.parent / "perf_analyzer"
    config = analyzer_config(current, repository, export, home, perf_analyzer, smoke=args.smoke)
    facts.budget_ms = float(config["constraints"]["perf_latency_p99"]["max"])
    facts.concurrencies = list(config["profile_models"][current.name]["parameters"]["concurrency"])
    facts.window_ms = int(config["perf_analyzer_flags"]["measurement-interval"])
    returncode = run_model_analyzer(args.model_analyzer, config, export, home)
    if returncode != 0:
        print(f"model-analyzer exited {returncode}; its output is in {export}")
        return returncode
    facts.search_s = time.monotonic() - started

    candidates = read_candidates(export / "output_model_repository", current.name)
    measurements = read_measurements(export / "results" / "metrics-model-inference.csv")
    target_concurrency = max(facts.concurrencies)
    chosen = shortlist(candidates, measurements, current, target_concurrency, facts.budget_ms, SHORTLIST_SIZE)
    rounds = SMOKE_ROUNDS if args.smoke else FULL_ROUNDS
    version_dir = repository / current.name / "1"
    side_by_side, pa_command = measure_side_by_side(
        chosen, version_dir, export / "side_by_side", home, perf_analyzer, rounds, side_by_side_concurrencies(facts)
    )
    golden = pick_golden(side_by_side, target_concurrency, facts.budget_ms)
    facts.load_after = load_average()
    facts.total_s = time.monotonic() - started

    plot = out.with_name("model_analyzer_throughput_vs_p99.png")
    roles = config_roles(side_by_side, golden)
    plot_throughput_vs_p99(candidates, measurements, roles, facts.budget_ms, facts.concurrencies, plot)
    report = render_report(
        facts, candidates, measurements, current, side_by_side, pa_command, golden, rounds, plot.name
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    return 0


def side_by_side_concurrencies(facts: RunFacts) -> list[int]:
    """The target concurrency, and the lowest one: what a golden configuration costs a lone request."""
    return [max(facts.concurrencies), min(facts.concurrencies)]


def build_repository(repository: Path, current: TritonModelSpec, onnx: Path | None, *, smoke: bool) -> str:
    """``<repository>/<model>/1/`` (model.onnx + the Python backend's model.py) under Triton's plain default
    config; returns a line saying which model it is."""
    if onnx is not None:
        model_bytes = onnx.read_bytes()
        what = f"`{onnx}`"
    else:
        model_bytes, trees = fit_model(TRAINING_ROWS[smoke], smoke=smoke)
        what = (
            f"HistGradientBoostingClassifier with the trainer's default hyperparameters"
            f"{' (5 iterations: smoke run)' if smoke else ''}, {trees} trees, fitted here on "
            f"{TRAINING_ROWS[smoke]:,} synthetic rows and exported with `trainer.model.export_onnx`"
        )
    models = ModelRepository(repository, current, TritonRuntime.PYTHON)
    models.install(1, model_bytes)
    (models.model_dir / "config.pbtxt").write_text(str(plain_default_config(current)))
    return what


def fit_model(rows: int, *, smoke: bool) -> tuple[bytes, int]:
    import numpy as np

    from trainer.model import build_classifier, export_onnx

    rng = np.random.default_rng(0)
    features = rng.normal(size=(rows, 10)).astype(np.float32)
    # A non-linear label with noise, so the trees are as deep and as many as on the real data.
    logit = features[:, 0] - 0.8 * features[:, 1] * features[:, 2] + 0.5 * np.abs(features[:, 3]) - 0.5
    labels = rng.random(rows) < 1 / (1 + np.exp(-logit))
    model = build_classifier({"max_iter": 5} if smoke else {}, seed=0).fit(features, labels)
    return export_onnx(model).SerializeToString(), int(model.n_iter_)


def plain_default_config(current: TritonModelSpec):
    """Triton's plain default for this model: the current tensors and max_batch_size, no dynamic batching,
    one instance, one ONNX Runtime thread."""
    config = model_config(replace(current, instance_count=1, intra_op_threads=1), TritonRuntime.PYTHON)
    config.ClearField("dynamic_batching")
    return config


def analyzer_config(
    current: TritonModelSpec, repository: Path, export: Path, home: TritonHome, perf_analyzer: Path, *, smoke: bool
) -> dict:
    config = yaml.safe_load((HERE / "config.yaml").read_text())
    model = config["profile_models"][current.name]
    grid = model["model_config_parameters"]
    if smoke:
        model["parameters"]["concurrency"] = SMOKE_CONCURRENCY
        config["skip_detailed_reports"] = True
        config["perf_analyzer_flags"] = SMOKE_PERF_ANALYZER_FLAGS
        grid["dynamic_batching"] = {"max_queue_delay_microseconds": [], "preferred_batch_size": []}
        grid["instance_group"][0]["count"] = []
        grid["parameters"]["intra_op_thread_count"]["string_value"] = []
    add_to_grid(grid, current)

    env = home.env()
    http, grpc, metrics = free_port(), free_port(), free_port()
    config.update(
        {
            "model_repository": str(repository),
            "output_model_repository_path": str(export / "output_model_repository"),
            "export_path": str(export),
            "checkpoint_directory": str(export / "checkpoints"),
            "triton_server_path": str(home.server),
            "triton_server_flags": {
                "backend_directory": str(home.backends),
                "allow_gpu_metrics": False,
                "exit_timeout_secs": 5,
            },
            "triton_server_environment": env,
            # Never the local stack's 8000-8002.
            "triton_http_endpoint": f"127.0.0.1:{http}",
            "triton_grpc_endpoint": f"127.0.0.1:{grpc}",
            "triton_metrics_url": f"http://127.0.0.1:{metrics}/metrics",
            "perf_analyzer_path": str(perf_analyzer),
        }
    )
    return config


def add_to_grid(grid: dict, spec: TritonModelSpec) -> None:
    """Make sure the grid holds ``spec``'s values, so the configuration the search may replace is measured."""
    values = [
        (grid["dynamic_batching"]["max_queue_delay_microseconds"], spec.max_queue_delay_us),
        (grid["dynamic_batching"]["preferred_batch_size"], list(spec.preferred_batch_sizes)),
        (grid["instance_group"][0]["count"], spec.instance_count),
        (grid["parameters"]["intra_op_thread_count"]["string_value"], str(spec.intra_op_threads)),
        (grid["max_batch_size"], spec.max_batch_size),
    ]
    for dimension, value in values:
        if value not in dimension:
            dimension.append(value)


def run_model_analyzer(model_analyzer: Path, config: dict, export: Path, home: TritonHome) -> int:
    resolved = export / "config.resolved.yaml"
    resolved.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"config: {resolved}")
    env = home.env()
    # perf_analyzer (next to model-analyzer) needs the server's library path too (libb64 shim, CUDA runtime stubs).
    run_env = {**os.environ, **env, "PATH": f"{model_analyzer.parent}{os.pathsep}{env['PATH']}"}
    command = [str(model_analyzer), "profile", "-f", str(resolved)]
    return subprocess.run(command, env=run_env, cwd=export, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
