"""``python -m log_worker.reader --since 1h``: which inference-log objects cover a time range, and
how many distinct requests they hold (``mlops_common.inference_log.read_inference_logs``)."""

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta

from log_worker.settings import Settings
from mlops_common.inference_log import list_log_objects, read_inference_logs
from mlops_common.s3 import s3_client

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str, now: datetime) -> datetime:
    """``now``, a duration before now (``90s``, ``15m``, ``2h``, ``7d``) or an ISO-8601 time (UTC if
    it has no offset)."""
    if value == "now":
        return now
    if match := _DURATION.match(value):
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m log_worker.reader", description=__doc__)
    parser.add_argument("--since", default="1h", help="start: now, 15m, 2h, 7d or ISO-8601 (default 1h)")
    parser.add_argument("--until", default="now", help="end (exclusive), same forms (default now)")
    parser.add_argument("--model", default=None, help="only this model name")
    parser.add_argument("--head", type=int, default=0, help="also print the first N rows")
    args = parser.parse_args(argv)

    settings = Settings()
    now = datetime.now(UTC)
    start, end = parse_time(args.since, now), parse_time(args.until, now)
    keys = list_log_objects(
        s3_client(settings), settings.logs_bucket, settings.logs_prefix, start, end, model_name=args.model
    )
    for key in keys:
        print(f"s3://{settings.logs_bucket}/{key}")
    frame = read_inference_logs(settings, start, end, model_name=args.model)
    span = f"{start:%Y-%m-%dT%H:%M:%SZ} .. {end:%Y-%m-%dT%H:%M:%SZ}"
    print(f"{len(frame)} inference-log rows (distinct request ids) in {len(keys)} objects, {span}")
    if args.head:
        print(frame.head(args.head).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
