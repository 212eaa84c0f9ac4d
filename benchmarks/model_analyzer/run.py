"""Run Triton Model Analyzer with ``config.yaml`` on this machine (see README.md).

    .venv/bin/python benchmarks/model_analyzer/run.py --model-repository .stack/model_repository

Fills the machine-specific parts into a copy of ``config.yaml`` (the bundled tritonserver, its backend
directory and library path, perf_analyzer, free ports away from the local stack's 8000-8002) and runs
``model-analyzer profile`` from the Triton venv. Results go to ``benchmarks/results/tmp/model_analyzer/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml

from benchmarks.stack import ROOT, ensure_perf_analyzer
from devstack.processes import free_port
from devstack.settings import Settings
from devstack.triton_home import ensure_triton_home

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=ROOT / ".stack" / "model_repository",
        help="a repository holding credit_default (config.pbtxt + version folder), e.g. the local stack's",
    )
    parser.add_argument("--export-path", type=Path, default=ROOT / "benchmarks" / "results" / "tmp" / "model_analyzer")
    parser.add_argument(
        "--model-analyzer", type=Path, help="the model-analyzer executable (default: the Triton venv's)"
    )
    args = parser.parse_args()

    settings = Settings()
    model_analyzer = (args.model_analyzer or settings.triton_venv / "bin" / "model-analyzer").resolve()
    if not model_analyzer.exists():
        print(f"{model_analyzer} is missing: {settings.triton_venv}/bin/pip install triton-model-analyzer==1.58.0")
        return 2
    if not (args.model_repository / "credit_default" / "config.pbtxt").exists():
        print(f"no credit_default model in {args.model_repository}: run `make demo` (or model sync) first")
        return 2
    home = ensure_triton_home(settings.triton_home, settings.triton_venv)
    perf_analyzer = ensure_perf_analyzer()

    export = args.export_path.resolve()
    output_repository = export / "output_model_repository"
    shutil.rmtree(output_repository, ignore_errors=True)
    export.mkdir(parents=True, exist_ok=True)
    env = home.env()
    config = yaml.safe_load((HERE / "config.yaml").read_text())
    http, grpc, metrics = free_port(), free_port(), free_port()
    config.update(
        {
            "model_repository": str(args.model_repository.resolve()),
            "output_model_repository_path": str(output_repository),
            "export_path": str(export),
            "triton_server_path": str(home.server),
            "triton_server_flags": {
                "backend_directory": str(home.backends),
                "allow_gpu_metrics": False,
                "exit_timeout_secs": 5,
            },
            "triton_server_environment": env,
            "triton_http_endpoint": f"127.0.0.1:{http}",
            "triton_grpc_endpoint": f"127.0.0.1:{grpc}",
            "triton_metrics_url": f"http://127.0.0.1:{metrics}/metrics",
            "perf_analyzer_path": str(perf_analyzer),
        }
    )
    resolved = export / "config.resolved.yaml"
    resolved.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"config: {resolved}")
    # perf_analyzer needs the same library path as the server (libb64 shim, CUDA runtime stubs).
    run_env = {**os.environ, **env, "PATH": f"{perf_analyzer.parent}{os.pathsep}{env['PATH']}"}
    command = [str(model_analyzer), "profile", "-f", str(resolved)]
    return subprocess.run(command, env=run_env, cwd=export, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
