"""``python -m log_worker``: consume inference logs into the Delta table until SIGTERM/SIGINT (then
flush and exit). Exits with status 2 if the table exists with other columns than this version writes."""

import asyncio
import gc
import signal
import sys

from prometheus_client import start_http_server

from log_worker.settings import Settings
from log_worker.worker import REGISTRY, LogWorker
from mlops_common.delta import TableSchemaError
from mlops_common.logging import configure_logging


async def serve(settings: Settings) -> None:
    worker = LogWorker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    # What start-up allocated (the Arrow, Delta and pydantic modules) lives as long as the process: out of
    # the collector's sight, so that its passes while consuming walk only what messages allocate.
    gc.collect()
    gc.freeze()
    await worker.run()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    start_http_server(settings.log_worker_metrics_port, registry=REGISTRY)
    try:
        asyncio.run(serve(settings))
    except TableSchemaError as err:
        sys.exit(f"log worker: {err}; migrate or move the table (LOGS_PREFIX) before starting this version")


if __name__ == "__main__":
    main()
