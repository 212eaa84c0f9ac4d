"""``python -m job_worker``: run the jobs queued through the API (``POST /jobs/score``, ``POST /jobs/train``)
until SIGTERM/SIGINT. Exits with status 2 when jobs are not configured (``JOBS_DATABASE_URL`` unset)."""

import asyncio
import signal
import sys

from prometheus_client import start_http_server

from job_worker.runners import LocalRunner, Runner
from job_worker.settings import Settings
from job_worker.worker import REGISTRY, JobWorker
from mlops_common.jobs import JobStore
from mlops_common.logging import configure_logging


def runner_for(settings: Settings) -> Runner:
    if settings.job_runner == "kubernetes":
        from job_worker.kubernetes_runner import KubernetesRunner  # the cluster's client, only where it runs

        return KubernetesRunner(
            settings.job_namespace,
            {"score": settings.job_template_score, "train": settings.job_template_train},
            timeout_s=settings.job_timeout_s,
        )
    return LocalRunner(settings.job_log_dir)


async def serve(settings: Settings, store: JobStore) -> None:
    worker = JobWorker(settings, store, runner_for(settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.jobs_database_url is None:
        sys.exit("job worker: JOBS_DATABASE_URL is unset: there is no jobs database to work from")
    start_http_server(settings.job_worker_metrics_port, registry=REGISTRY)
    store = JobStore(settings.jobs_database_url.get_secret_value())
    try:
        asyncio.run(serve(settings, store))
    finally:
        store.close()


if __name__ == "__main__":
    main()
