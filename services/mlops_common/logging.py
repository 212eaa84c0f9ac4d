"""One log format for every process: text (timestamp, level, logger, message) on a terminal, or one JSON
object per line for a cluster's log collector (``LOG_FORMAT=json``). Either way a line written while a
request is served carries that request's id."""

import logging
import sys
from contextvars import ContextVar
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

# Set by a service for the request it is serving (the BFF's X-Request-ID); asyncio copies it into every
# task the request starts, so the lines of one request share it.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request_id={request_id}]" if request_id else line


def configure_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}{request_id}",
                style="{",
                timestamp="time",  # ISO 8601, UTC
                rename_fields={"levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Third-party clients are chatty at INFO; their warnings still come through.
    for noisy in ("botocore", "urllib3", "aiobotocore", "s3fs", "feast", "alembic", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
