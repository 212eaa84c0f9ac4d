"""The published baseline: a plain in-process prediction server, what a team would write without the
platform. FastAPI + pydantic request models + the scikit-learn model's ``predict_proba`` on each request
(a batch loops over its rows); no Triton, no feature store, no inference logging, one process.

    .venv/bin/python benchmarks/baseline/server.py --model baseline.joblib --port 8090

``fit_baseline_model`` makes the model: the trainer's HistGradientBoosting with the benchmark platform's
hyperparameters, fitted on rows labelled by the champion's own probabilities, so its trees are as many
and as deep as a real fit's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import joblib
import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, create_model

from benchmarks.stack import QUICK_MODEL, feature_bodies
from mlops_common.features import FEATURE_NAMES, MODEL_INPUT, MODEL_OUTPUT

THRESHOLD = 0.5
TRAINING_ROWS = 4000

# One required float per model feature, as a hand-written request model would have them.
Applicant = create_model("Applicant", **{name: (float, ...) for name in FEATURE_NAMES})


class Scored(BaseModel):
    probability: float
    decision: str


def create_app(model) -> FastAPI:
    app = FastAPI(title="Baseline: FastAPI + scikit-learn in-process")

    def score(applicant: BaseModel) -> Scored:
        row = np.array([[getattr(applicant, name) for name in FEATURE_NAMES]], dtype=np.float32)
        probability = float(model.predict_proba(row)[0, 1])
        return Scored(probability=probability, decision="reject" if probability >= THRESHOLD else "approve")

    # async: scored on the event loop, without the thread hop a plain `def` route would add.
    @app.post("/predict")
    async def predict(applicant: Applicant) -> Scored:  # type: ignore[valid-type]
        return score(applicant)

    @app.post("/predict/batch")
    async def predict_batch(applicants: list[Applicant]) -> list[Scored]:  # type: ignore[valid-type]
        return [score(applicant) for applicant in applicants]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def fit_baseline_model(onnx_path: Path, out: Path, seed: int = 7) -> dict[str, int]:
    """Fit and save (joblib) the baseline's model; returns its size (trees per class, rows fitted)."""
    import onnxruntime as ort

    from trainer.model import build_classifier

    rows = np.array([[b[n] for n in FEATURE_NAMES] for b in feature_bodies(TRAINING_ROWS, seed=seed)], np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probabilities = session.run([MODEL_OUTPUT], {MODEL_INPUT: rows})[0][:, 1]
    labels = np.random.default_rng(seed).random(len(rows)) < probabilities
    model = build_classifier(QUICK_MODEL, seed).fit(rows, labels)
    joblib.dump(model, out)
    return {"trees": int(model.n_iter_), "rows": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a joblib file from fit_baseline_model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(joblib.load(args.model)), host=args.host, port=args.port, access_log=False)


if __name__ == "__main__":
    main()
