"""One log format for every process: timestamp, level, logger, message."""

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # Third-party clients are chatty at INFO; their warnings still come through.
    for noisy in ("botocore", "urllib3", "aiobotocore", "s3fs", "feast", "alembic", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
