"""python -m model_sync [--once]

Without --once: a loop beside Triton that keeps it on the MLflow champion (Prometheus metrics on
MODEL_SYNC_METRICS_PORT). With --once: wait for a champion and place it in the model repository
without calling Triton, for an init container that runs before Triton starts.
"""

import argparse
import logging
import signal
import sys
import threading
import time

from prometheus_client import start_http_server

from mlops_common.logging import configure_logging
from model_sync.settings import Settings
from model_sync.sync import REGISTRY, ModelSync

log = logging.getLogger("model_sync")


def place_when_available(sync: ModelSync, settings: Settings) -> int:
    deadline = time.monotonic() + settings.champion_wait_timeout_s
    while True:
        try:
            if sync.place_champion() is not None:
                return 0
            log.info("no %r alias yet on %s", settings.champion_alias, settings.registered_model_name)
        except Exception:
            log.exception("could not place the champion")
        if time.monotonic() > deadline:
            log.error("gave up after %.0f s without a champion", settings.champion_wait_timeout_s)
            return 1
        time.sleep(settings.sync_interval_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="place the champion without Triton, then exit")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    settings.export_mlflow_client_env()
    sync = ModelSync(settings)
    if args.once:
        return place_when_available(sync, settings)

    start_http_server(settings.model_sync_metrics_port, registry=REGISTRY)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info(
        "syncing %s@%s into Triton %s every %.0f s",
        settings.registered_model_name,
        settings.champion_alias,
        settings.triton_grpc_url,
        settings.sync_interval_s,
    )
    sync.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
