"""``python -m log_worker.reader --since 1h``: the inference-log table's rows in a time range (read
with ``mlops_common.inference_log.load_inference_log_table``: only the date partitions of the range),
how many data files held them, and how many distinct request ids they have (as many as rows)."""

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta

from log_worker.settings import Settings
from mlops_common.inference_log import load_inference_log_table

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
    try:
        start, end = parse_time(args.since, now), parse_time(args.until, now)
    except ValueError as err:
        parser.error(f"--since/--until: {err} (expected now, 90s, 15m, 2h, 7d or an ISO-8601 time)")
    if start >= end:
        parser.error(f"--since {args.since!r} is not before --until {args.until!r}")
    table, files = load_inference_log_table(settings, start, end, model_name=args.model)
    distinct = len(set(table["request_id"].to_pylist()))
    span = f"{start:%Y-%m-%dT%H:%M:%SZ} .. {end:%Y-%m-%dT%H:%M:%SZ}"
    print(f"table {settings.inference_log_table_uri}")
    print(f"{table.num_rows} inference-log rows ({distinct} distinct request ids) from {files} data files, {span}")
    if args.head:
        print(table.slice(0, args.head).to_pandas().to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
