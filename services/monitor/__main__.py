"""python -m monitor [--once]

Without --once: every MONITOR_WINDOW_S, evaluate the served versions' drift and live quality, export
them on MONITOR_METRICS_PORT, write the window's reports to S3, decide about retraining (RETRAIN_MODE)
and record the window in MLflow, until SIGTERM/SIGINT; beside it, every ROLLOUT_ANALYSIS_INTERVAL_S, analyse a
challenger served in shadow or canary mode and promote or roll it back (monitor.rollout). With --once:
one window ending now, a summary on stdout; with --wait also wait for a retraining it started to finish
(locally), then exit.
"""

import argparse
import logging
import signal
import sys
import threading

from prometheus_client import start_http_server

from mlops_common.logging import configure_logging
from monitor.metrics import REGISTRY
from monitor.retraining import LocalLauncher
from monitor.rollout import RolloutAnalysis
from monitor.service import Monitor, WindowResult, launcher_for
from monitor.settings import Settings

log = logging.getLogger("monitor")


def summary(result: WindowResult) -> str:
    lines = [
        f"window {result.window.start:%Y-%m-%d %H:%M:%S} .. {result.window.end:%H:%M:%S} UTC, "
        f"champion: version {result.champion}"
    ]
    for v in result.window.versions:
        lines.append(f"  version {v.version}: {v.rows} predictions in the window, {v.labeled} labelled in the lookback")
        if v.drift is not None:
            drifted = ", ".join(v.drifted_features) or (
                "none" if v.enough_rows else f"no verdict (too few rows: {v.rows})"
            )
            lines.append(f"    drifted features: {drifted}; score PSI {v.drift.score_psi:.3f}")
            lines.append("    PSI " + ", ".join(f"{name} {d.psi:.3f}" for name, d in v.drift.features.items()))
        if v.quality is not None and v.quality.roc_auc is not None:
            lines.append(f"    live ROC AUC {v.quality.roc_auc:.4f}, log loss {v.quality.log_loss:.4f}")
        if v.version in result.reports:
            lines.append(f"    report: {result.reports[v.version]}")
    d = result.decision
    lines.append(f"retraining: {d.decision} ({d.reason}: {d.detail})")
    lines.append(f"MLflow run of this window: {result.run_id}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="evaluate one window ending now, then exit")
    parser.add_argument("--wait", action="store_true", help="with --once: wait for a local retraining it started")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    settings.export_mlflow_client_env()
    monitor = Monitor(settings, launcher_for(settings))
    if args.once:
        result = monitor.run_window()
        print(summary(result))
        if args.wait and result.decision.triggered and isinstance(monitor.launcher, LocalLauncher):
            assert monitor.launcher.process is not None
            return monitor.launcher.process.wait()
        return 0

    start_http_server(settings.monitor_metrics_port, registry=REGISTRY)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info(
        "monitoring %s every %.0f s (retraining: %s), rollouts every %.0f s from %s",
        settings.registered_model_name,
        settings.monitor_window_s,
        settings.retrain_mode,
        settings.rollout_analysis_interval_s,
        settings.prometheus_url,
    )
    rollouts = threading.Thread(target=RolloutAnalysis(settings).run, args=(stop,), name="rollout", daemon=True)
    rollouts.start()
    while not stop.is_set():
        try:
            monitor.run_window()
        except Exception:  # a table or MLflow that does not answer: counted, logged, tried again next window
            log.exception("window failed")
        stop.wait(settings.monitor_window_s)
    rollouts.join(timeout=settings.rollout_query_timeout_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
