"""python -m bff: serve the prediction API with uvicorn, BFF_WORKERS processes behind one port."""

import shutil

import uvicorn
from fastapi import FastAPI

from bff.settings import Settings
from bff.workers import serve_worker_metrics, share_metrics_between_workers
from mlops_common.feast_runtime import import_feast_without_typechecks
from mlops_common.logging import configure_logging


def worker_app() -> FastAPI:
    """The app of one worker process; uvicorn calls it in each worker, after ``main`` named the metrics
    directory the workers share."""
    # Feast first, without typeguard's checks (mlops_common.feast_runtime: seconds of start-up per worker).
    # Not at the top of this module: importing Feast opens prometheus-client's metric files, which must go
    # to the directory share_metrics_between_workers() names.
    import_feast_without_typechecks()
    from bff.app import worker_app as configured_app

    return configured_app()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    metrics_directory = share_metrics_between_workers()
    metrics_server = serve_worker_metrics(metrics_directory, settings.bff_host, settings.bff_metrics_port)
    try:
        uvicorn.run(
            # Each worker process builds its app from the environment (a single worker runs in this process).
            "bff.__main__:worker_app",
            factory=True,
            workers=settings.worker_processes(),
            host=settings.bff_host,
            port=settings.bff_port,
            log_level=settings.log_level.lower(),
            access_log=False,  # request counts and latencies are in /metrics; a line per request costs CPU
            # Then the lifespan exit drains the inference-log spool for up to log_drain_timeout_s.
            timeout_graceful_shutdown=settings.bff_graceful_shutdown_s,
        )
    finally:
        metrics_server.shutdown()
        shutil.rmtree(metrics_directory, ignore_errors=True)


if __name__ == "__main__":
    main()
