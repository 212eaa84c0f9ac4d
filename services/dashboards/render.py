"""Draw each dashboard as one PNG: its panels on Grafana's grid, each evaluated over the time window with
Prometheus' ``query_range``. Time series panels are lines, stat/gauge panels their value in big text, a panel
without data says "No data" in a red frame; :func:`render_all` also says which panels had data."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from dashboards.grafana import (
    STAT_PANEL_TYPES,
    Dashboard,
    DashboardError,
    PanelQuery,
    Placement,
    QueryWindow,
    VariableValue,
    format_legend,
    format_value,
    grid_height,
    is_query_panel,
    layout_panels,
    load_dashboards,
    panel_queries,
    panel_title,
    panel_unit,
    query_variables,
    substitute,
)
from dashboards.prometheus import PrometheusClient, QueryRejected, Series

DPI = 100
DEFAULT_WIDTH_PX = 1600
ROW_UNIT_PX = 34  # one gridPos height unit
HEADER_PX = 58
GAP_PX = 6
TITLE_PX = 22
# Grafana's classic palette, darkened where it would be pale on white.
PALETTE = ("#56A64B", "#E0B400", "#3274D9", "#FF780A", "#E02F44", "#8F3BB8", "#1F9FAF", "#A16D00", "#C4162A", "#73BF69")
THRESHOLD_COLORS = {
    "green": "#37872D",
    "red": "#C4162A",
    "yellow": "#B58B00",
    "orange": "#E55400",
    "blue": "#1F60C4",
    "purple": "#8F3BB8",
    "text": "#202226",
    "transparent": "#202226",
}
NO_DATA_COLOR = "#C4162A"


@dataclass(frozen=True)
class PanelSummary:
    """What one panel showed: its queries (substituted), how many series and finite points came back, and
    the finite points of each query (a panel with one empty query of two still ``has_data``)."""

    dashboard: str  # uid
    panel: str  # title
    panel_type: str
    queries: tuple[str, ...]
    series: int
    points: int
    query_points: tuple[int, ...] = ()

    @property
    def has_data(self) -> bool:
        return self.points > 0


class RenderResult(list[Path]):
    """The PNG files written (one per dashboard, in file-name order). ``panels_by_picture`` holds, per file,
    every panel that has queries (or should have) and whether it had data; ``panels`` all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.panels_by_picture: dict[Path, list[PanelSummary]] = {}

    def add(self, path: Path, panels: Sequence[PanelSummary]) -> None:
        self.append(path)
        self.panels_by_picture[path] = list(panels)

    @property
    def panels(self) -> list[PanelSummary]:
        return [p for panels in self.panels_by_picture.values() for p in panels]

    def empty_panels(self) -> list[PanelSummary]:
        return [p for p in self.panels if not p.has_data]


@dataclass
class PanelData:
    placement: Placement
    title: str
    queries: list[PanelQuery] = field(default_factory=list)
    series: list[tuple[str, Series]] = field(default_factory=list)  # (legend, series)
    query_points: list[int] = field(default_factory=list)  # finite points per query

    @property
    def panel(self) -> Mapping[str, Any]:
        return self.placement.panel

    @property
    def points(self) -> int:
        return sum(s.finite_points for _, s in self.series)

    def summary(self, dashboard: str) -> PanelSummary:
        return PanelSummary(
            dashboard=dashboard,
            panel=self.title,
            panel_type=str(self.panel.get("type", "")),
            queries=tuple(q.expr for q in self.queries),
            series=len(self.series),
            points=self.points,
            query_points=tuple(self.query_points),
        )


def _epoch(t: datetime | float) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


def fetch_panels(
    client: PrometheusClient,
    dashboard: Dashboard,
    start: float,
    end: float,
    window: QueryWindow,
    variables: Mapping[str, VariableValue] | None = None,
) -> list[PanelData]:
    """Every placed panel of the dashboard with the series of its queries."""
    values = query_variables(dashboard.spec, window, variables)
    panels: list[PanelData] = []
    for placement in layout_panels(dashboard.spec):
        data = PanelData(placement, re.sub(r"\s+", " ", substitute(panel_title(placement.panel), values)))
        if not placement.is_row:
            data.queries = panel_queries(placement.panel, values, dashboard.uid)
        for query in data.queries:
            try:
                result = client.query_range(query.expr, start, end, window.step)
            except QueryRejected as err:
                raise DashboardError(
                    f"{dashboard.path.name}: panel {data.title!r}: Prometheus rejected {query.expr!r}: {err.reason}"
                ) from None
            data.series.extend((format_legend(query.legend_format, s.labels, query.expr), s) for s in result)
            data.query_points.append(sum(s.finite_points for s in result))
        panels.append(data)
    return panels


# ---------------------------------------------------------------------------------------------- drawing


class _Canvas:
    """Pixel geometry (top-left origin) on a matplotlib figure."""

    def __init__(self, width_px: int, height_px: int) -> None:
        self.w, self.h = width_px, height_px
        self.fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")
        FigureCanvasAgg(self.fig)

    def rect(self, left: float, top: float, width: float, height: float) -> list[float]:
        """[left, bottom, width, height] in figure fractions."""
        return [left / self.w, 1 - (top + height) / self.h, max(width, 1) / self.w, max(height, 1) / self.h]

    def text(self, x: float, y: float, s: str, **kwargs: Any) -> None:
        self.fig.text(x / self.w, 1 - y / self.h, s, **kwargs)

    def axes(self, left: float, top: float, width: float, height: float) -> Any:
        return self.fig.add_axes(self.rect(left, top, width, height))

    def frame(self, left: float, top: float, width: float, height: float, **kwargs: Any) -> None:
        x, y, w, h = self.rect(left, top, width, height)
        # Below the axes: a panel's frame is its background.
        kwargs.setdefault("zorder", -10)
        self.fig.add_artist(Rectangle((x, y), w, h, transform=self.fig.transFigure, **kwargs))


def _fit(text: str, width_px: float, char_px: float) -> str:
    limit = max(4, int(width_px / char_px))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _color(name: str | None, default: str) -> str:
    if not name:
        return default
    key = str(name).lower()
    for base, hex_color in THRESHOLD_COLORS.items():
        if key == base or key.endswith("-" + base):  # "semi-dark-green", "dark-red", ...
            return hex_color
    return name if re.fullmatch(r"#[0-9a-fA-F]{6}", str(name)) else default


def _threshold_color(panel: Mapping[str, Any], value: float | None) -> str:
    steps = ((((panel.get("fieldConfig") or {}).get("defaults") or {}).get("thresholds") or {}).get("steps")) or []
    color = None
    for step in steps:
        if not isinstance(step, Mapping):
            continue
        bound = step.get("value")
        if bound is None or (value is not None and math.isfinite(value) and value >= float(bound)):
            color = step.get("color")
    return _color(color, THRESHOLD_COLORS["text"])


def _reduce(panel: Mapping[str, Any], series: Series) -> float | None:
    calcs = ((panel.get("options") or {}).get("reduceOptions") or {}).get("calcs") or ["lastNotNull"]
    finite = series.values[np.isfinite(series.values)]
    if not finite.size:
        return None
    calc = calcs[0]
    reducers = {"mean": np.mean, "max": np.max, "min": np.min, "sum": np.sum, "count": np.size}
    if calc in reducers:
        return float(reducers[calc](finite))
    if calc in ("first", "firstNotNull"):
        return float(finite[0])
    return float(finite[-1])


def _date_nums(epoch_s: np.ndarray) -> np.ndarray:
    """Matplotlib date numbers of epoch seconds."""
    return mdates.date2num(np.round(epoch_s * 1000).astype("int64").astype("datetime64[ms]"))


def _draw_no_data(canvas: _Canvas, left: float, top: float, width: float, height: float) -> None:
    canvas.text(
        left + width / 2, top + height / 2, "No data", ha="center", va="center", fontsize=15, color=NO_DATA_COLOR
    )


def _draw_timeseries(
    canvas: _Canvas, data: PanelData, box: tuple[float, float, float, float], start: float, end: float
) -> None:
    left, top, width, height = box
    unit, decimals = panel_unit(data.panel)
    options = data.panel.get("options") or {}
    legend_opts = options.get("legend") or {}
    show_legend = legend_opts.get("showLegend", True) and legend_opts.get("displayMode") != "hidden"
    labels = [legend for legend, _ in data.series]
    n = len(labels)
    ncol, rows, shown = 1, 0, n
    if show_legend and n:
        col_px = min(max(len(s) for s in labels) * 5.6 + 34, width - 16)
        ncol = max(1, min(n, int((width - 16) // col_px)))
        max_rows = max(1, int((height - 90) / 2 // 13))
        rows = min(math.ceil(n / ncol), max_rows)
        shown = min(n, rows * ncol)
    legend_px = rows * 13 + (6 if rows else 0)
    ax_left, ax_top = left + 60, top + 6
    ax_w, ax_h = max(width - 70, 10), max(height - 6 - 20 - legend_px, 10)
    ax = canvas.axes(ax_left, ax_top, ax_w, ax_h)
    ax.set_facecolor("white")
    defaults = (data.panel.get("fieldConfig") or {}).get("defaults") or {}
    fill = (defaults.get("custom") or {}).get("fillOpacity") or 0
    handles = []
    for i, (_, series) in enumerate(data.series):
        color = PALETTE[i % len(PALETTE)]
        x = _date_nums(series.times)
        ax.plot(x, series.values, color=color, linewidth=1.4)
        if fill:
            ax.fill_between(x, series.values, color=color, alpha=min(float(fill), 100) / 100 * 0.6, linewidth=0)
        handles.append(Line2D([], [], color=color, linewidth=2))
    ax.set_xlim(*_date_nums(np.array([start, end])))
    span_days = (end - start) / 86400
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=max(3, int(ax_w // 90))))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M" if span_days > 1 else "%H:%M", tz=UTC))
    ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=max(2, int(ax_h // 35)), min_n_ticks=2))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: format_value(v, unit, decimals)))
    bottom_lim, top_lim = defaults.get("min"), defaults.get("max")
    finite = [s.values[np.isfinite(s.values)] for _, s in data.series]
    if bottom_lim is None and data.points and min(float(v.min()) for v in finite if v.size) >= 0:
        bottom_lim = 0  # counts, rates and durations: no negative axis below a flat line
    if isinstance(bottom_lim, int | float) or isinstance(top_lim, int | float):
        ax.set_ylim(
            bottom=bottom_lim if isinstance(bottom_lim, int | float) else None,
            top=top_lim if isinstance(top_lim, int | float) else None,
        )
    ax.tick_params(labelsize=7.5, length=2, colors="#464c54")
    ax.grid(True, color="#e4e7eb", linewidth=0.7)
    for spine in ax.spines.values():
        spine.set_color("#c7d0d9")
    if not data.points:
        ax.set_yticks([])
        _draw_no_data(canvas, ax_left, ax_top, ax_w, ax_h)
    if rows:
        legend_labels = [_fit(s, (width - 16) / ncol - 26, 5.6) for s in labels[:shown]]
        if shown < n:
            legend_labels[-1] = f"… {n - shown + 1} more series"
        # Matplotlib fills legend columns first; Grafana reads left to right.
        order = [i for column in range(ncol) for i in range(column, shown, ncol)]
        canvas.fig.legend(
            [handles[i] for i in order],
            [legend_labels[i] for i in order],
            loc="upper left",
            bbox_to_anchor=(canvas.rect(left + 8, 0, 0, 0)[0], 1 - (ax_top + ax_h + 20) / canvas.h),
            ncol=ncol,
            fontsize=7.5,
            frameon=False,
            handlelength=1.4,
            borderaxespad=0,
            borderpad=0,
            columnspacing=1.4,
            labelspacing=0.35,
        )


def _draw_stat(canvas: _Canvas, data: PanelData, box: tuple[float, float, float, float]) -> None:
    left, top, width, height = box
    unit, decimals = panel_unit(data.panel)
    cells = [(legend, series, _reduce(data.panel, series)) for legend, series in data.series]
    cells = [c for c in cells if c[2] is not None][:6]
    if not cells:
        _draw_no_data(canvas, left, top, width, height)
        return
    cell_w = width / len(cells)
    gauge = data.panel.get("type") in ("gauge", "bargauge")
    for i, (legend, series, value) in enumerate(cells):
        text = format_value(value, unit, decimals)
        cx = left + cell_w * (i + 0.5)
        label_px = 14 if len(cells) > 1 else 0
        text_area_h = height - label_px - (12 if gauge else 0)
        size_px = min(text_area_h * 0.5, (cell_w - 12) / max(1, len(text)) / 0.62, 72)
        graph_mode = (data.panel.get("options") or {}).get("graphMode", "area")
        if not gauge and graph_mode != "none" and series.finite_points > 1:
            spark = canvas.axes(left + cell_w * i + 4, top + height * 0.55, cell_w - 8, height * 0.45 - label_px)
            spark.plot(series.times, series.values, color="#3274D9", alpha=0.35, linewidth=1.2)
            spark.set_axis_off()
        canvas.text(
            cx,
            top + text_area_h / 2,
            text,
            ha="center",
            va="center",
            fontsize=size_px * 0.72,
            fontweight="bold",
            color=_threshold_color(data.panel, value),
        )
        if label_px:
            canvas.text(
                cx, top + height - 6, _fit(legend, cell_w, 6), ha="center", va="bottom", fontsize=7.5, color="#464c54"
            )
        if gauge:
            defaults = (data.panel.get("fieldConfig") or {}).get("defaults") or {}
            lo = defaults.get("min", 0)
            hi = defaults.get("max", {"percentunit": 1, "percent": 100}.get(unit))
            if isinstance(lo, int | float) and isinstance(hi, int | float) and hi > lo:
                fraction = min(max((value - lo) / (hi - lo), 0), 1)
                bar_top, bar_w = top + height - label_px - 12, cell_w - 24
                canvas.frame(cx - bar_w / 2, bar_top, bar_w, 6, facecolor="#e4e7eb", edgecolor="none")
                canvas.frame(
                    cx - bar_w / 2,
                    bar_top,
                    bar_w * fraction,
                    6,
                    facecolor=_threshold_color(data.panel, value),
                    edgecolor="none",
                )


def _draw_table(canvas: _Canvas, data: PanelData, box: tuple[float, float, float, float]) -> None:
    left, top, width, height = box
    unit, decimals = panel_unit(data.panel)
    rows = [(legend, _reduce(data.panel, series)) for legend, series in data.series]
    if not any(v is not None for _, v in rows):
        _draw_no_data(canvas, left, top, width, height)
        return
    max_lines = max(1, int(height // 14))
    for i, (legend, value) in enumerate(rows[:max_lines]):
        canvas.text(left + 8, top + 12 + 14 * i, _fit(legend, width * 0.7, 6), fontsize=8, va="center")
        canvas.text(
            left + width - 8,
            top + 12 + 14 * i,
            format_value(value, unit, decimals),
            fontsize=8,
            va="center",
            ha="right",
        )


def _draw_text(canvas: _Canvas, panel: Mapping[str, Any], box: tuple[float, float, float, float]) -> None:
    left, top, width, height = box
    content = str((panel.get("options") or {}).get("content") or panel.get("content") or "")
    content = re.sub(r"<[^>]+>|[#*`_>]", "", content)
    wrap = max(10, int(width / 6))
    lines = [w for line in content.splitlines() for w in (textwrap.wrap(line.strip(), wrap) or [""])]
    canvas.text(left + 8, top + 4, "\n".join(lines[: max(1, int(height // 13))]), fontsize=8, va="top", color="#464c54")


def draw_dashboard(
    dashboard: Dashboard,
    panels: Sequence[PanelData],
    start: float,
    end: float,
    out_path: Path,
    *,
    width_px: int = DEFAULT_WIDTH_PX,
    subtitle: str = "",
) -> Path:
    """Write the dashboard's PNG (``width_px`` wide, height from the grid: :func:`picture_size`)."""
    width_px, height_px = picture_size([p.placement for p in panels], width_px)
    canvas = _Canvas(width_px, height_px)
    canvas.text(14, 24, dashboard.title, fontsize=15, fontweight="bold", va="center", color="#202226")
    frm, to = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") for t in (start, end))
    canvas.text(14, 46, f"{dashboard.uid}  ·  {frm} → {to} UTC  {subtitle}", fontsize=8.5, va="center", color="#6e7580")
    unit_w = width_px / 24
    for data in panels:
        p = data.placement
        left, top = p.x * unit_w + GAP_PX / 2, HEADER_PX + p.y * ROW_UNIT_PX + GAP_PX / 2
        width, height = p.w * unit_w - GAP_PX, p.h * ROW_UNIT_PX - GAP_PX
        if p.is_row:
            canvas.text(left + 2, top + height / 2 + 4, data.title, fontsize=11, fontweight="bold", va="center")
            canvas.frame(left, top + height + GAP_PX / 2 - 1, width, 1, facecolor="#c7d0d9", edgecolor="none")
            continue
        empty = is_query_panel(data.panel) and not data.points
        canvas.frame(
            left,
            top,
            width,
            height,
            facecolor="#fbfbfc",
            edgecolor=NO_DATA_COLOR if empty else "#d8dde3",
            linewidth=1.6 if empty else 0.8,
            linestyle="--" if empty else "-",
        )
        canvas.text(
            left + 8,
            top + TITLE_PX / 2 + 2,
            _fit(data.title, width - 16, 6.6),
            fontsize=9,
            fontweight="bold",
            va="center",
            color="#202226",
        )
        body = (left + 4, top + TITLE_PX, width - 8, height - TITLE_PX - 4)
        kind = data.panel.get("type")
        if not is_query_panel(data.panel):
            _draw_text(canvas, data.panel, body)
        elif kind in STAT_PANEL_TYPES:
            _draw_stat(canvas, data, body)
        elif kind == "table":
            _draw_table(canvas, data, body)
        else:
            _draw_timeseries(canvas, data, body, start, end)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    canvas.fig.savefig(partial, format="png", dpi=DPI, facecolor="white")
    partial.replace(out_path)
    return out_path


def picture_size(placements: Sequence[Placement], width_px: int = DEFAULT_WIDTH_PX) -> tuple[int, int]:
    """Width and height in pixels of a dashboard's PNG."""
    return width_px, HEADER_PX + max(grid_height(placements), 1) * ROW_UNIT_PX + GAP_PX


def render_all(
    prometheus_url: str,
    dashboards_dir: Path,
    out_dir: Path,
    start: datetime | float,
    end: datetime | float,
    *,
    step_s: float | None = None,
    scrape_interval_s: float = 15.0,
    rate_interval_s: float | None = None,
    variables: Mapping[str, VariableValue] | None = None,
    width_px: int = DEFAULT_WIDTH_PX,
    timeout_s: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> RenderResult:
    """Render every dashboard of ``dashboards_dir`` into ``out_dir/<uid>.png`` from Prometheus between
    ``start`` and ``end`` (datetimes or epoch seconds). Returns the PNG paths (a list) whose ``panels``
    attribute tells, per panel, whether it had data. Raises :class:`DashboardError` (one-line message) on a
    missing folder, invalid JSON, unreachable Prometheus or a rejected query."""
    t0, t1 = _epoch(start), _epoch(end)
    if not t1 > t0:
        raise DashboardError(f"empty time range: start {t0} is not before end {t1}")
    window = QueryWindow(
        range_s=t1 - t0, step_s=step_s, scrape_interval_s=scrape_interval_s, rate_interval_s=rate_interval_s
    )
    dashboards = load_dashboards(Path(dashboards_dir))
    result = RenderResult()
    subtitle = f" ·  step {window.step:g}s  ·  {prometheus_url}"
    with PrometheusClient(prometheus_url, timeout_s=timeout_s, transport=transport) as client:
        for dashboard in dashboards:
            panels = fetch_panels(client, dashboard, t0, t1, window, variables)
            path = Path(out_dir) / f"{dashboard.name}.png"
            try:
                draw_dashboard(dashboard, panels, t0, t1, path, width_px=width_px, subtitle=subtitle)
            except OSError as err:
                raise DashboardError(f"cannot write {path}: {err.strerror or err}") from None
            result.add(path, [p.summary(dashboard.uid) for p in panels if is_query_panel(p.panel)])
    return result
