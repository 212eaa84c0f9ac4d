"""``python -m dashboards render [--prometheus-url URL] [--out DIR] [--dashboards DIR] [--range 30m] [--step auto]``
draws every Grafana dashboard of the folder as one PNG from a live Prometheus;
``python -m dashboards queries`` lists every panel's expression after variable substitution.

Bad input (missing folder, invalid JSON, unreachable Prometheus, a rejected query) is one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from dashboards.grafana import DashboardError, QueryWindow, iter_panel_queries, load_dashboards, parse_duration
from dashboards.render import render_all
from dashboards.settings import Settings


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _auto_or(parse: Callable[[str], float]) -> Callable[[str], float | None]:
    def parse_or_auto(text: str) -> float | None:
        return None if text.strip().lower() == "auto" else parse(text)

    return parse_or_auto


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip().lstrip("$"), value


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dashboards", type=Path, default=settings.dashboards_dir, help="folder of Grafana dashboard JSON files"
    )
    common.add_argument("--range", dest="range_s", type=_duration, default=30 * 60.0, help="time range (default 30m)")
    common.add_argument("--step", dest="step_s", type=_auto_or(_duration), default=None, help="query step, or auto")
    common.add_argument(
        "--scrape-interval",
        type=_duration,
        default=settings.dashboards_scrape_interval,
        help="Prometheus' scrape interval: minimum step, basis of $__rate_interval (default %(default)s)",
    )
    common.add_argument(
        "--rate-interval",
        type=_auto_or(_duration),
        default=None,
        help="$__rate_interval (default: max(step + scrape interval, 4 x scrape interval))",
    )
    common.add_argument(
        "--var", dest="variables", type=_variable, action="append", default=[], help="template variable NAME=VALUE"
    )
    render = commands.add_parser("render", parents=[common], help="draw one PNG per dashboard")
    render.add_argument("--prometheus-url", default=settings.prometheus_url, help="default %(default)s")
    render.add_argument("--out", type=Path, default=settings.dashboards_out_dir, help="default %(default)s")
    render.add_argument("--width", type=int, default=1600, help="picture width in pixels")
    commands.add_parser("queries", parents=[common], help="list dashboard, panel and substituted expression")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings()
    except ValidationError as err:
        first = err.errors()[0]
        print(f"dashboards: invalid setting {str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return 2
    args = _parser(settings).parse_args(argv)
    variables = dict(args.variables)
    try:
        if args.command == "queries":
            window = QueryWindow(args.range_s, args.step_s, args.scrape_interval, args.rate_interval)
            try:
                for dashboard in load_dashboards(args.dashboards):
                    for q in iter_panel_queries(dashboard, variables, window=window):
                        print(f"{dashboard.path.name}\t{q.panel}\t{q.expr}")
            except BrokenPipeError:  # `| head`
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
            return 0
        end = time.time()
        result = render_all(
            args.prometheus_url,
            args.dashboards,
            args.out,
            end - args.range_s,
            end,
            step_s=args.step_s,
            scrape_interval_s=args.scrape_interval,
            rate_interval_s=args.rate_interval,
            variables=variables,
            width_px=args.width,
            timeout_s=settings.prometheus_timeout_s,
        )
    except DashboardError as err:
        print(f"dashboards {args.command}: {err}", file=sys.stderr)
        return 2
    for path, panels in result.panels_by_picture.items():
        empty = [p.panel for p in panels if not p.has_data]
        status = f"no data: {'; '.join(empty)}" if empty else "every panel has data"
        print(f"{path}  ({len(panels)} panels, {status})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
