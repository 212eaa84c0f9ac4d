"""``make demo-drift`` (``python -m monitor.drift_demo``, on the local stack after ``make demo``): a shifted
applicant population through the prediction API (incomes x1.6, two in five applicants without
credit-bureau history), their outcomes through ``POST /labels``, and the monitor on a short window.
It waits until Prometheus shows the drift gauges and the drift alert pending or firing, and until the
monitor's retraining has registered a new challenger in MLflow; then prints the figures and where to
look. The monitor goes back to the stack's settings at the end."""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import Field

from devstack.settings import Settings as StackSettings
from devstack.stack import LocalStack
from feature_store.pipeline import read_raw
from mlops_common.feast_store import open_feature_store
from mlops_common.features import ENTITY_KEY, FEATURE_NAMES
from mlops_common.logging import configure_logging
from mlops_common.raw_tables import APPLICATION_TRAIN
from mlops_common.settings import FeastSettings, MlflowSettings
from trainer.dataset import training_set

INCOME = "AMT_INCOME_TOTAL"
BUREAU = [name for name in FEATURE_NAMES if name.startswith("bureau_")]
DRIFT_ALERT = "MlopsModelDriftHigh"


class DemoSettings(FeastSettings, MlflowSettings):
    bff_port: int = 8080
    prometheus_url: str = "http://127.0.0.1:9090"
    demo_applicants: int = Field(3000, ge=200)
    # The monitor's window during the demo, and the drifting windows in a row that start a retraining.
    demo_window_s: float = Field(20.0, ge=10)
    demo_drift_windows: int = Field(2, ge=1)
    # The cool-down during the demo: long enough for one retraining per run, short enough to run it again.
    demo_cooldown_s: float = Field(120.0, ge=0)
    demo_timeout_s: float = Field(600.0, gt=0)


def shifted_population(settings: DemoSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Request rows (applicant id plus all ten features, shifted) and their outcomes (labels without a time)."""
    data = training_set(open_feature_store(settings), read_raw(settings, APPLICATION_TRAIN), datetime.now(UTC))
    rng = np.random.default_rng(2026)
    chosen = rng.choice(len(data.labels), min(settings.demo_applicants, len(data.labels)), replace=False)
    no_bureau = rng.random(len(chosen)) < 0.4
    rows, outcomes = [], []
    for i, index in enumerate(chosen):
        row: dict[str, Any] = {ENTITY_KEY: int(data.entity_ids[index])}
        for column, name in enumerate(FEATURE_NAMES):
            value = float(data.features[index, column])
            row[name] = None if np.isnan(value) or (no_bureau[i] and name in BUREAU) else value
        row[INCOME] = row[INCOME] * 1.6 if row[INCOME] is not None else None
        rows.append(row)
        outcomes.append({"applicant_id": row[ENTITY_KEY], "outcome": int(data.labels[index])})
    return rows, outcomes


def restart_monitor(overrides: dict[str, str]) -> None:
    """The stack's monitor daemon again, with ``overrides`` on top of the stack's environment."""
    stack = LocalStack(StackSettings())
    stack.stop_app("monitor")
    stack.start_app("monitor", "monitor", env=overrides)


def send_traffic(bff: httpx.Client, rows: list[dict[str, Any]], stop: threading.Event, sent: list[int]) -> None:
    """Batches of 100 shifted rows, round and round, until stopped."""
    while not stop.is_set():
        for start in range(0, len(rows), 100):
            if stop.is_set():
                return
            answer = bff.post("/predict/batch", json=rows[start : start + 100])
            answer.raise_for_status()
            sent[0] += len(rows[start : start + 100])
            time.sleep(0.2)


def prometheus(settings: DemoSettings, path: str, **params: str) -> Any:
    answer = httpx.get(f"{settings.prometheus_url}{path}", params=params, timeout=10)
    answer.raise_for_status()
    return answer.json()["data"]


def wait_until(what: str, check, deadline: float, every_s: float = 3.0) -> Any:
    print(f"... waiting for {what}", flush=True)
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every_s)
    raise SystemExit(f"gave up waiting for {what}; see .stack/logs/monitor.log")


def new_challenger(client: MlflowClient, model: str, since_ms: int):
    try:
        version = client.get_model_version_by_alias(model, "challenger")
    except MlflowException:
        return None
    return version if version.creation_timestamp >= since_ms and "retraining.reason" in version.tags else None


def main() -> int:
    settings = DemoSettings()
    configure_logging("WARNING")
    started_ms = int(time.time() * 1000)
    deadline = time.monotonic() + settings.demo_timeout_s
    print("reading the training applicants from the offline store (Feast), shifting them ...", flush=True)
    rows, outcomes = shifted_population(settings)
    bff = httpx.Client(base_url=f"http://127.0.0.1:{settings.bff_port}", timeout=30)

    restart_monitor(
        {
            "MONITOR_WINDOW_S": f"{settings.demo_window_s:g}",
            "RETRAIN_DRIFT_WINDOWS": str(settings.demo_drift_windows),
            "RETRAIN_COOLDOWN_S": f"{settings.demo_cooldown_s:g}",
        }
    )
    stop, sent = threading.Event(), [0]
    sender = threading.Thread(target=send_traffic, args=(bff, rows, stop, sent), daemon=True)
    sender.start()
    print(f"sending {len(rows)} shifted applicants through POST /predict/batch, round and round ...", flush=True)
    try:
        drifted = wait_until(
            "drift in Prometheus (monitor_feature_drifted)",
            lambda: prometheus(settings, "/api/v1/query", query="monitor_feature_drifted == 1")["result"],
            deadline,
        )
        # The outcomes arrive later than the predictions (a label joins the predictions made before it).
        observed_at = datetime.now(UTC).isoformat()
        for start in range(0, len(outcomes), 10_000):
            labels = [{**label, "observed_at": observed_at} for label in outcomes[start : start + 10_000]]
            bff.post("/labels", json={"labels": labels}).raise_for_status()
        print(f"recorded {len(outcomes)} outcomes through POST /labels", flush=True)
        wait_until(
            f"the {DRIFT_ALERT} alert",
            lambda: any(
                a["labels"]["alertname"] == DRIFT_ALERT for a in prometheus(settings, "/api/v1/alerts")["alerts"]
            ),
            deadline,
        )
        client = MlflowClient(settings.mlflow_tracking_uri)
        challenger = wait_until(
            "the retraining's challenger in MLflow (training runs in the monitor's process: a minute or two)",
            lambda: new_challenger(client, settings.registered_model_name, started_ms),
            deadline,
            every_s=5,
        )
        # The figures of the demo's monitor, before it goes back to the stack's settings.
        psi = {
            s["metric"]["feature"]: float(s["value"][1])
            for s in prometheus(settings, "/api/v1/query", query="monitor_feature_psi")["result"]
        }
        alerts = {a["labels"]["alertname"]: a["state"] for a in prometheus(settings, "/api/v1/alerts")["alerts"]}
        auc = prometheus(settings, "/api/v1/query", query="monitor_live_roc_auc")["result"]
    finally:
        stop.set()
        sender.join(timeout=30)
        restart_monitor({})
    window_run = challenger.tags.get("retraining.monitor_run_id")
    print(f"\nsent {sent[0]} predictions; drifted features: {sorted(s['metric']['feature'] for s in drifted)}")
    print("PSI by feature: " + ", ".join(f"{name} {value:.3f}" for name, value in sorted(psi.items())))
    for series in auc:
        version = series["metric"]["version"]
        print(f"live ROC AUC of version {version} (labels joined): {float(series['value'][1]):.4f}")
    print(f"alerts: {alerts}")
    print(
        f"NEW CHALLENGER: {settings.registered_model_name} version {challenger.version} "
        f"(retraining.reason={challenger.tags['retraining.reason']}, "
        f"drifted features {challenger.tags.get('retraining.drifted_features')}, "
        f"score PSI {challenger.tags.get('retraining.score_psi')}); the champion is unchanged."
    )
    print(
        "where to look:\n"
        f"  MLflow: {settings.mlflow_tracking_uri}/#/models/{settings.registered_model_name} (the challenger's tags), "
        f"the monitor's window run {window_run} in experiment credit-default-monitoring (figures, report link)\n"
        f"  Prometheus: {settings.prometheus_url}/alerts, {settings.prometheus_url}/graph?g0.expr=monitor_feature_psi\n"
        "  the model-quality dashboard as a picture: make dashboards (.stack/dashboards/)\n"
        "  promote it after review: mlops model promote " + str(challenger.version) + " --wait"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
