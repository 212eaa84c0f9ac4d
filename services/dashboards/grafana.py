"""What a Grafana dashboard JSON means, without Grafana: its panels (rows and nested panels included), the
PromQL of each panel with Grafana's variables substituted, legends, units and the grid layout.

Pure functions only (no HTTP, no drawing): ``render`` and the tests that evaluate every dashboard query
both use :func:`iter_panel_queries`, so a query is substituted the same way wherever it is run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Panels that carry no query: nothing to evaluate, nothing "empty" about them.
NON_QUERY_PANEL_TYPES = frozenset({"row", "text", "news", "dashlist", "alertlist", "annolist", "welcome"})
STAT_PANEL_TYPES = frozenset({"stat", "gauge", "bargauge", "singlestat", "piechart"})
GRID_COLUMNS = 24
DEFAULT_RANGE_S = 30 * 60.0
DEFAULT_SCRAPE_INTERVAL_S = 15.0
# Points per series Grafana would ask for on a panel about a screen wide; "auto" steps aim at this.
AUTO_MAX_POINTS = 300
# Prometheus refuses a range query with more points than this per series.
PROMETHEUS_MAX_POINTS = 11_000
ALL_VALUES = ".*"


class DashboardError(Exception):
    """Bad input: the message is one line meant for the user (the file, panel or URL it is about)."""


# ---------------------------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str | float) -> float:
    """Seconds in a Prometheus/Grafana duration (``30m``, ``1h30m``, ``500ms``) or a plain number of seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = text.strip()
        try:
            seconds = float(raw)
        except ValueError:
            parts = _DURATION_PART.findall(raw)
            if not parts or "".join(n + u for n, u in parts) != raw:
                raise ValueError(f"invalid duration {text!r} (expected e.g. 30s, 5m, 1h30m)") from None
            seconds = sum(float(n) * _DURATION_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration PromQL accepts: whole days, hours, minutes or seconds when exact, else milliseconds."""
    ms = max(1, round(seconds * 1000))
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def auto_step(range_s: float, min_step_s: float, max_points: int = AUTO_MAX_POINTS) -> float:
    """Grafana's ``$__interval`` for a range: range / points, rounded up to a round interval, at least the
    scrape interval, and never more points than Prometheus allows."""
    wanted = max(range_s / max_points, min_step_s, range_s / PROMETHEUS_MAX_POINTS)
    return float(next((n for n in _NICE_STEPS if n >= wanted), math.ceil(wanted)))


# ---------------------------------------------------------------------------------------------- variables


@dataclass(frozen=True)
class QueryWindow:
    """The time window of a render and Grafana's built-in variables derived from it (seconds)."""

    range_s: float = DEFAULT_RANGE_S
    step_s: float | None = None  # None: auto_step
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S
    rate_interval_s: float | None = None  # None: Grafana's rule from step and scrape interval

    @property
    def step(self) -> float:
        if self.step_s is not None:
            return max(self.step_s, self.range_s / PROMETHEUS_MAX_POINTS)
        return auto_step(self.range_s, self.scrape_interval_s)

    @property
    def rate_interval(self) -> float:
        if self.rate_interval_s is not None:
            return self.rate_interval_s
        return max(self.step + self.scrape_interval_s, 4 * self.scrape_interval_s)

    def builtin_variables(self) -> dict[str, str]:
        step, rate, rng = self.step, self.rate_interval, self.range_s
        return {
            "__interval": format_duration(step),
            "__interval_ms": str(round(step * 1000)),
            "__rate_interval": format_duration(rate),
            "__rate_interval_ms": str(round(rate * 1000)),
            # Grafana renders $__range in whole seconds ("1800s").
            "__range": f"{round(rng)}s",
            "__range_s": str(round(rng)),
            "__range_ms": str(round(rng * 1000)),
        }


VariableValue = str | Sequence[str]


def _current_value(variable: Mapping[str, Any]) -> VariableValue | None:
    current = variable.get("current") or {}
    value = current.get("value") if isinstance(current, Mapping) else None
    if value in (None, "", []):
        return None
    return value


def template_variables(dashboard: Mapping[str, Any]) -> dict[str, VariableValue]:
    """Values of the dashboard's template variables as Grafana would use them on first load: the saved
    current value; "All" (or no value for a query/custom variable) matches everything: the variable's
    ``allValue``, else ``.*``. Data source and ad hoc variables do not appear in queries and are skipped."""
    values: dict[str, VariableValue] = {}
    templating = dashboard.get("templating")
    listed = templating.get("list") if isinstance(templating, Mapping) else None
    for variable in listed if isinstance(listed, list) else []:
        if not isinstance(variable, Mapping) or not variable.get("name"):
            continue
        name, kind = str(variable["name"]), variable.get("type", "query")
        if kind in ("datasource", "adhoc"):
            continue
        all_value = variable.get("allValue") or ALL_VALUES
        current = _current_value(variable)
        if kind == "constant":
            values[name] = str(variable.get("query", current or ""))
        elif kind == "textbox":
            values[name] = str(current if current is not None else variable.get("query", ""))
        elif kind == "interval":
            options = [o.strip() for o in str(variable.get("query", "")).split(",") if o.strip()]
            chosen = current if current is not None else (options[0] if options else "$__interval")
            values[name] = "$__interval" if chosen in ("auto", "$__auto_interval_" + name) else str(chosen)
        elif current is None or current == "$__all" or (not isinstance(current, str) and "$__all" in current):
            values[name] = all_value
        else:
            values[name] = current if isinstance(current, str) else [str(v) for v in current]
    return values


def _regex_escape(value: str) -> str:
    """Escape regex metacharacters for a PromQL string literal (doubled backslashes, as Grafana does)."""
    return re.sub(r"[$^*{}\[\]'+?.()|\\]", lambda m: "\\\\" + m.group(0), value)


def _format_value(value: VariableValue, fmt: str | None) -> str:
    values = [value] if isinstance(value, str) else [str(v) for v in value]
    if len(values) == 1:
        return _regex_escape(values[0]) if fmt == "regex" and values[0] != ALL_VALUES else values[0]
    if fmt == "csv":
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    # Grafana's default for several values in a Prometheus query: a regex alternation.
    return "(" + "|".join(_regex_escape(v) for v in values) + ")"


# $name, ${name}, ${name:format}, [[name]], [[name:format]] (Grafana's three syntaxes).
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")


def substitute(text: str, variables: Mapping[str, VariableValue]) -> str:
    """Replace Grafana variables in ``text`` (``$name``, ``${name}``, ``${name:format}``, ``[[name]]``).
    Unknown ones are left as they are, as Grafana does (a regex's ``$`` anchor is not a variable); the tests of
    the real dashboards check that none is left. Values may hold variables themselves (an interval variable
    on "auto" is ``$__interval``)."""

    def replace(match: re.Match[str], depth: int = 0) -> str:
        name = match.group(1) or match.group(3) or match.group(5)
        fmt = match.group(2) or match.group(4)
        if name not in variables:
            return match.group(0)
        value = _format_value(variables[name], fmt)
        return _VARIABLE.sub(lambda m: replace(m, depth + 1), value) if depth < 5 and "$" in value else value

    return _VARIABLE.sub(replace, text)


def query_variables(
    dashboard: Mapping[str, Any],
    window: QueryWindow | None = None,
    variables: Mapping[str, VariableValue] | None = None,
) -> dict[str, VariableValue]:
    """Every variable a query of ``dashboard`` may use: built-ins of the window, the dashboard's template
    variables, then ``variables`` (which win)."""
    return {**(window or QueryWindow()).builtin_variables(), **template_variables(dashboard), **(variables or {})}


# ---------------------------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class Dashboard:
    """One dashboard file. ``name`` (the uid, else the file name) names its picture."""

    path: Path
    spec: Mapping[str, Any]

    @property
    def uid(self) -> str:
        return str(self.spec.get("uid") or self.path.stem)

    @property
    def title(self) -> str:
        return str(self.spec.get("title") or self.uid)

    @property
    def name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.uid).strip("._") or "dashboard"


def load_dashboard(path: Path) -> Dashboard:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DashboardError(f"{path}: invalid JSON: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DashboardError(f"{path}: cannot read: {err}") from None
    # The export format of Grafana's HTTP API wraps the dashboard.
    if isinstance(spec, dict) and isinstance(spec.get("dashboard"), dict) and "panels" not in spec:
        spec = spec["dashboard"]
    if not isinstance(spec, dict) or not isinstance(spec.get("panels", spec.get("rows")), list):
        raise DashboardError(f"{path}: not a Grafana dashboard (no 'panels' list)")
    return Dashboard(path, spec)


def load_dashboards(folder: Path) -> list[Dashboard]:
    """Every ``*.json`` dashboard of ``folder`` in file-name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DashboardError(f"dashboards folder {folder} does not exist")
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise DashboardError(f"dashboards folder {folder} holds no *.json dashboard")
    dashboards = [load_dashboard(p) for p in paths]
    seen: dict[str, Path] = {}
    for d in dashboards:
        if d.name in seen:
            raise DashboardError(f"{d.path} and {seen[d.name]} have the same uid {d.uid!r}")
        seen[d.name] = d.path
    return dashboards


def _top_level_panels(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    panels = spec.get("panels")
    if isinstance(panels, list):
        return [p for p in panels if isinstance(p, Mapping)]
    # Dashboards from before Grafana 5 keep their panels in "rows".
    return [
        {"type": "row", "title": r.get("title", ""), "panels": r.get("panels") or []}
        for r in spec.get("rows") or []
        if isinstance(r, Mapping)
    ]


def iter_panels(spec: Mapping[str, Any], *, include_rows: bool = False) -> Iterator[Mapping[str, Any]]:
    """Every panel of a dashboard in order, recursing into rows (collapsed ones keep their panels inside)
    and any other panel that nests ``panels``."""

    def walk(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for panel in panels:
            if include_rows or panel.get("type") != "row":
                yield panel
            nested = panel.get("panels")
            if isinstance(nested, list):
                yield from walk([p for p in nested if isinstance(p, Mapping)])

    yield from walk(_top_level_panels(spec))


def panel_title(panel: Mapping[str, Any]) -> str:
    return str(panel.get("title") or f"{panel.get('type', 'panel')} {panel.get('id', '')}".strip())


def is_query_panel(panel: Mapping[str, Any]) -> bool:
    return panel.get("type") not in NON_QUERY_PANEL_TYPES


@dataclass(frozen=True)
class PanelQuery:
    """One PromQL target of one panel, variables substituted."""

    dashboard: str  # uid (or title when the JSON has no uid)
    panel: str  # panel title, variables substituted
    panel_type: str
    ref_id: str
    expr: str  # after substitution: what Prometheus evaluates
    legend_format: str
    raw_expr: str  # as written in the JSON
    instant: bool = False


def panel_targets(panel: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The panel's visible PromQL targets (targets of other data sources have no ``expr``)."""
    return [
        t
        for t in panel.get("targets") or []
        if isinstance(t, Mapping) and not t.get("hide") and isinstance(t.get("expr"), str) and t["expr"].strip()
    ]


def panel_queries(
    panel: Mapping[str, Any], values: Mapping[str, VariableValue], dashboard: str = ""
) -> list[PanelQuery]:
    """The panel's own targets (not those of nested panels) with ``values`` substituted."""
    return [
        PanelQuery(
            dashboard=dashboard,
            panel=substitute(panel_title(panel), values),
            panel_type=str(panel.get("type", "")),
            ref_id=str(target.get("refId") or chr(ord("A") + i % 26)),
            expr=substitute(target["expr"], values),
            legend_format=substitute(str(target.get("legendFormat") or ""), values),
            raw_expr=target["expr"],
            instant=bool(target.get("instant")) and not target.get("range"),
        )
        for i, target in enumerate(panel_targets(panel))
    ]


def dashboard_name(dashboard: Mapping[str, Any] | Dashboard) -> str:
    if isinstance(dashboard, Dashboard):
        return dashboard.uid
    return str(dashboard.get("uid") or dashboard.get("title") or "")


def iter_panel_queries(
    dashboard: Mapping[str, Any] | Dashboard,
    variables: Mapping[str, VariableValue] | None = None,
    *,
    window: QueryWindow | None = None,
    **more_variables: VariableValue,
) -> Iterator[PanelQuery]:
    """Every (dashboard, panel title, substituted expression) of a dashboard, rows and nested panels
    included. ``variables``/``more_variables`` override template variables (``namespace="mlops"``);
    ``window`` sets ``$__interval``, ``$__rate_interval`` and ``$__range`` (default: 30 minutes, auto step,
    15 s scrape interval, so ``$__rate_interval`` is 1m)."""
    spec = dashboard.spec if isinstance(dashboard, Dashboard) else dashboard
    values = query_variables(spec, window, {**(variables or {}), **more_variables})
    for panel in iter_panels(spec):
        yield from panel_queries(panel, values, dashboard_name(dashboard))


# ---------------------------------------------------------------------------------------------- legends

_LEGEND_LABEL = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


def series_name(labels: Mapping[str, str], expr: str = "") -> str:
    """Grafana's default series name: ``metric{a="1", b="2"}``, the labels alone, or the expression."""
    metric = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    if not metric and not rest:
        return expr
    return f"{metric}{{{rest}}}" if rest else metric


def format_legend(legend_format: str, labels: Mapping[str, str], expr: str = "") -> str:
    """The legend of one series: ``{{label}}`` replaced by the series' value of that label (missing labels
    become empty, as in Grafana); an empty or ``__auto`` format gives the series name."""
    if not legend_format.strip() or legend_format.strip() == "__auto":
        return series_name(labels, expr)
    text = _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), legend_format)
    return re.sub(r"\s+", " ", text).strip() or series_name(labels, expr)


# ---------------------------------------------------------------------------------------------- units

_TIME_UNITS = (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0), ("min", 60.0), ("hour", 3600.0), ("day", 86400.0))
_TIME_BASE = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SI_BYTES = ("B", "kB", "MB", "GB", "TB", "PB")
_SHORT = ("", " K", " Mil", " Bil", " Tri")
_RATE_SUFFIX = {
    "reqps": " req/s",
    "rps": " reads/s",
    "wps": " writes/s",
    "iops": " io/s",
    "ops": " ops/s",
    "opm": " ops/min",
    "reqpm": " req/min",
    "cps": " c/s",
    "eps": " evt/s",
    "mps": " msg/s",
    "recps": " rec/s",
    "rowsps": " rows/s",
}


def format_number(value: float, decimals: int | None = None) -> str:
    """About three significant digits, no exponent, no trailing zeros (unless ``decimals`` is given)."""
    if decimals is not None:
        return f"{value:.{max(0, int(decimals))}f}"
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    magnitude = math.floor(math.log10(abs(value)))
    places = min(max(0, 2 - magnitude), 9)
    text = f"{value:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _scaled(value: float, base: float, units: Sequence[str], decimals: int | None, sep: str = " ") -> str:
    i = 0
    while i < len(units) - 1 and abs(value) >= base ** (i + 1):
        i += 1
    return f"{format_number(value / base**i, decimals)}{sep}{units[i]}"


def format_value(value: float | None, unit: str | None = None, decimals: int | None = None) -> str:
    """A value as Grafana shows it with the panel's unit (``fieldConfig.defaults.unit``): percentunit,
    percent, time units (s, ms, µs, ns, m, h, d), bytes/decbytes/bits, reqps and other rates, short, none;
    ``suffix:x``/``prefix:x`` and unknown units become a suffix."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN" if value is not None else "no data"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    unit = (unit or "").strip()
    if unit in ("", "none", "string"):
        return format_number(value, decimals)
    if unit == "percentunit":
        return f"{format_number(value * 100, decimals)}%"
    if unit == "percent":
        return f"{format_number(value, decimals)}%"
    if unit in _TIME_BASE or unit == "dtdurations":
        seconds = value * _TIME_BASE.get(unit, 1.0)
        if seconds == 0:
            return "0 s"
        name, size = _TIME_UNITS[0]
        for candidate, candidate_size in _TIME_UNITS:
            if abs(seconds) >= candidate_size:
                name, size = candidate, candidate_size
        return f"{format_number(seconds / size, decimals)} {name}"
    if unit in ("bytes", "kbytes", "mbytes", "gbytes"):
        scale = 1024 ** ("bytes", "kbytes", "mbytes", "gbytes").index(unit)
        return _scaled(value * scale, 1024, _IEC, decimals)
    if unit in ("decbytes", "deckbytes", "decmbytes", "decgbytes"):
        scale = 1000 ** ("decbytes", "deckbytes", "decmbytes", "decgbytes").index(unit)
        return _scaled(value * scale, 1000, _SI_BYTES, decimals)
    if unit in ("bits", "decbits"):
        return _scaled(value, 1024 if unit == "bits" else 1000, ("b", "Kib", "Mib", "Gib", "Tib"), decimals)
    if unit in ("Bps", "binBps"):
        return _scaled(value, 1000 if unit == "Bps" else 1024, ("B/s", "kB/s", "MB/s", "GB/s", "TB/s"), decimals)
    if unit in ("bps", "binbps"):
        return _scaled(value, 1000 if unit == "bps" else 1024, ("b/s", "kb/s", "Mb/s", "Gb/s", "Tb/s"), decimals)
    if unit == "short":
        return _scaled(value, 1000, _SHORT, decimals, sep="")
    if unit in _RATE_SUFFIX:
        return _scaled(value, 1000, _SHORT, decimals, sep="") + _RATE_SUFFIX[unit]
    if unit.startswith("prefix:"):
        return f"{unit[len('prefix:') :]}{format_number(value, decimals)}"
    if unit.startswith("suffix:"):
        return f"{format_number(value, decimals)}{unit[len('suffix:') :]}"
    return f"{format_number(value, decimals)} {unit}"


def panel_unit(panel: Mapping[str, Any]) -> tuple[str, int | None]:
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    decimals = defaults.get("decimals")
    return str(defaults.get("unit") or ""), int(decimals) if isinstance(decimals, int | float) else None


# ---------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Placement:
    """Where a panel goes on the 24-column grid (Grafana's gridPos units; y grows downwards)."""

    panel: Mapping[str, Any] = field(compare=False)
    x: int
    y: int
    w: int
    h: int

    @property
    def is_row(self) -> bool:
        return self.panel.get("type") == "row"


def _grid_pos(panel: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    pos = panel.get("gridPos")
    if not isinstance(pos, Mapping):
        return None
    try:
        x, y, w, h = (int(pos[k]) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError):
        return None
    x = min(max(0, x), GRID_COLUMNS - 1)
    return x, max(0, y), min(max(1, w), GRID_COLUMNS - x), max(1, h)


def layout_panels(
    spec: Mapping[str, Any], *, columns: int = 2, default_height: int = 8, stat_height: int = 4
) -> list[Placement]:
    """The dashboard's panels on Grafana's 24-column grid, as Grafana lays them out with every row expanded.

    Panels are grouped into sections (the panels before the first row, then each row with the panels that
    follow it, or those nested in it when it is collapsed); each section keeps its panels' gridPos relative
    to its top, and sections are stacked. Panels nested in other panels are appended in order, and panels
    without a gridPos flow in ``columns`` columns (stat panels ``stat_height`` high)."""
    sections: list[tuple[Mapping[str, Any] | None, list[Mapping[str, Any]]]] = [(None, [])]
    top = _top_level_panels(spec)
    positions = [_grid_pos(p) for p in top]
    if all(pos is not None for pos in positions):
        # Grafana's order is the grid's: a row owns the panels below it up to the next row.
        order = sorted(range(len(top)), key=lambda i: (positions[i][1], positions[i][0], i))  # type: ignore[index]
        top = [top[i] for i in order]
    for panel in top:
        if panel.get("type") == "row":
            nested = [p for p in panel.get("panels") or [] if isinstance(p, Mapping)]
            sections.append((panel, []))
            for child in nested:
                sections[-1][1].extend(iter_panels({"panels": [child]}, include_rows=True))
        else:
            sections[-1][1].extend(iter_panels({"panels": [panel]}, include_rows=True))

    placements: list[Placement] = []
    y0 = 0
    for row, panels in sections:
        if row is None and not panels:
            continue
        if row is not None:
            placements.append(Placement(row, 0, y0, GRID_COLUMNS, 1))
            y0 += 1
        positioned = [(p, _grid_pos(p)) for p in panels if p.get("type") != "row"]
        with_pos = [(p, pos) for p, pos in positioned if pos is not None]
        top_y = min((pos[1] for _, pos in with_pos), default=0)
        bottom = y0
        for panel, pos in with_pos:
            x, y, w, h = pos
            placements.append(Placement(panel, x, y0 + y - top_y, w, h))
            bottom = max(bottom, y0 + y - top_y + h)
        # Panels without gridPos flow below, `columns` to a line.
        width = GRID_COLUMNS // max(1, columns)
        line_h = 0
        for i, (panel, _) in enumerate((p, pos) for p, pos in positioned if pos is None):
            column = i % columns
            if column == 0 and i:
                bottom += line_h
                line_h = 0
            h = stat_height if panel.get("type") in STAT_PANEL_TYPES else default_height
            line_h = max(line_h, h)
            placements.append(Placement(panel, column * width, bottom, width, h))
        y0 = bottom + line_h
    return placements


def grid_height(placements: Sequence[Placement]) -> int:
    return max((p.y + p.h for p in placements), default=0)
