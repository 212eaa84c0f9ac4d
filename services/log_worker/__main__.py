"""``python -m log_worker``: consume inference logs into S3 until SIGTERM/SIGINT (then flush and exit)."""

import asyncio
import signal

from prometheus_client import start_http_server

from log_worker.settings import Settings
from log_worker.worker import REGISTRY, LogWorker
from mlops_common.logging import configure_logging


async def serve(settings: Settings) -> None:
    worker = LogWorker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    start_http_server(settings.log_worker_metrics_port, registry=REGISTRY)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
