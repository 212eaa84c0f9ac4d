"""python -m bff: serve the prediction API with uvicorn."""

import uvicorn

from bff.app import create_app
from bff.settings import Settings
from mlops_common.logging import configure_logging


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.bff_host,
        port=settings.bff_port,
        log_level=settings.log_level.lower(),
        access_log=False,  # request counts and latencies are in /metrics; a line per request costs CPU
        # Then the lifespan exit drains the inference-log spool for up to log_drain_timeout_s.
        timeout_graceful_shutdown=settings.bff_graceful_shutdown_s,
    )


if __name__ == "__main__":
    main()
