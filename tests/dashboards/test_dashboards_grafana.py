"""The pure logic of ``dashboards.grafana``: durations, Grafana variables, panels (rows and nested panels),
legends, units and the grid layout; and every real dashboard yields a query for every panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dashboards.grafana import (
    Dashboard,
    DashboardError,
    QueryWindow,
    auto_step,
    format_duration,
    format_legend,
    format_value,
    grid_height,
    is_query_panel,
    iter_panel_queries,
    iter_panels,
    layout_panels,
    load_dashboard,
    load_dashboards,
    panel_queries,
    parse_duration,
    query_variables,
    substitute,
    template_variables,
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "observability" / "dashboards").glob("*.json"))
# What is left of a Grafana variable after substitution: $name, ${...}, [[...]].
UNRESOLVED = re.compile(r"\$\w|\$\{|\[\[")


def panel(title: str, expr: str | None = None, *, kind: str = "timeseries", pos=None, legend="", **extra):
    p = {"type": kind, "title": title, **extra}
    if expr is not None:
        p["targets"] = [{"refId": "A", "expr": expr, "legendFormat": legend}]
    if pos is not None:
        p["gridPos"] = dict(zip("xywh", pos, strict=True))
    return p


# ---------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h30m", 5400), ("500ms", 0.5), ("15s", 15), ("2d", 172800), ("90", 90)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3x", "m5", "-1m", "0s", "1m 30s"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(60, "1m"), (90, "90s"), (3600, "1h"), (86400, "1d"), (1.5, "1500ms"), (15, "15s")]
)
def test_format_duration_is_promql(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_auto_step_is_round_at_least_the_scrape_interval_and_within_prometheus_limits() -> None:
    assert auto_step(1800, 15) == 15
    assert auto_step(1800, 2) == 10  # 1800 / 300 = 6 s, rounded up
    assert auto_step(24 * 3600, 15) == 300
    assert auto_step(400 * 86400, 1, max_points=10**9) >= 400 * 86400 / 11_000


def test_window_builtins_follow_grafana() -> None:
    builtins = QueryWindow().builtin_variables()  # 30 minutes, 15 s scrape interval
    assert builtins["__interval"] == "15s"
    assert builtins["__rate_interval"] == "1m"  # max(15s + 15s, 4 x 15s)
    assert builtins["__range"] == "1800s"
    assert builtins["__range_s"] == "1800"
    assert builtins["__interval_ms"] == "15000"
    big_step = QueryWindow(range_s=86400, scrape_interval_s=15).builtin_variables()
    assert big_step["__interval"] == "5m"
    assert big_step["__rate_interval"] == "315s"  # step + scrape interval beats 4 x scrape interval
    assert QueryWindow(rate_interval_s=30).builtin_variables()["__rate_interval"] == "30s"
    assert QueryWindow(step_s=7).builtin_variables()["__interval"] == "7s"


# ---------------------------------------------------------------------------------------------- variables


def test_substitute_all_three_syntaxes_and_leaves_unknown_and_regex_anchors() -> None:
    values = {"namespace": "mlops", "__rate_interval": "1m", "pod": ".*"}
    assert substitute('rate(x{namespace="$namespace"}[$__rate_interval])', values) == 'rate(x{namespace="mlops"}[1m])'
    assert substitute('x{namespace="${namespace}", pod=~"[[pod]]"}', values) == 'x{namespace="mlops", pod=~".*"}'
    assert substitute('x{job=~".+-(bff|triton)$"} $unknown', values) == 'x{job=~".+-(bff|triton)$"} $unknown'
    # The longest name wins: $namespace_extra is its own (unknown) variable, not $namespace + "_extra".
    assert substitute("$namespace_extra", values) == "$namespace_extra"


def test_substitute_multi_values_and_formats() -> None:
    values = {"model": ["credit.default", "other"], "one": ["a.b"]}
    assert substitute('x{model=~"$model"}', values) == r'x{model=~"(credit\\.default|other)"}'
    assert substitute("${model:csv}", values) == "credit.default,other"
    assert substitute("${model:pipe}", values) == "credit.default|other"
    assert substitute("$one", values) == "a.b"
    assert substitute("${one:regex}", values) == r"a\\.b"


def test_template_variables_current_all_and_kinds() -> None:
    dashboard = {
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {"name": "namespace", "type": "query", "current": {"text": "mlops", "value": "mlops"}},
                {"name": "pod", "type": "query", "includeAll": True, "current": {"text": "All", "value": "$__all"}},
                {"name": "model", "type": "custom", "current": {"value": ["$__all"]}, "allValue": "c.+"},
                {"name": "version", "type": "query", "current": {}},
                {"name": "env", "type": "constant", "query": "prod"},
                {"name": "filter", "type": "textbox", "query": "x"},
                {"name": "models", "type": "custom", "current": {"value": ["a", "b"]}},
                {"name": "window", "type": "interval", "query": "1m", "current": {"value": "$__auto_interval_window"}},
                {"name": "fixed", "type": "interval", "query": "1m,5m", "current": {"value": "5m"}},
            ]
        }
    }
    values = template_variables(dashboard)
    assert values == {
        "namespace": "mlops",
        "pod": ".*",
        "model": "c.+",
        "version": ".*",
        "env": "prod",
        "filter": "x",
        "models": ["a", "b"],
        "window": "$__interval",
        "fixed": "5m",
    }
    # An interval variable on "auto" resolves through $__interval.
    assert substitute("rate(x[$window])", {**values, "__interval": "15s"}) == "rate(x[15s])"


# ---------------------------------------------------------------------------------------------- panels

NESTED = {
    "uid": "nested",
    "templating": {"list": [{"name": "namespace", "type": "query", "current": {"value": "$__all"}}]},
    "panels": [
        panel("Top", 'up{namespace=~"$namespace"}', pos=(0, 0, 24, 4), legend="{{job}}"),
        {"type": "row", "title": "Open row", "gridPos": {"x": 0, "y": 4, "w": 24, "h": 1}, "panels": []},
        panel("In open row", "rate(a_total[$__rate_interval])", pos=(0, 5, 12, 8)),
        panel("Text", kind="text", pos=(12, 5, 12, 8), options={"content": "# hello"}),
        {
            "type": "row",
            "title": "Collapsed row",
            "collapsed": True,
            "gridPos": {"x": 0, "y": 13, "w": 24, "h": 1},
            "panels": [
                panel("In collapsed row", "sum(b)", pos=(0, 40, 8, 6), kind="stat"),
                panel("Nested group", "sum(c)", pos=(8, 40, 16, 6), panels=[panel("Deep", "sum(d)")]),
            ],
        },
        {"type": "row", "title": "Last row", "gridPos": {"x": 0, "y": 14, "w": 24, "h": 1}},
        panel("Hidden target", pos=(0, 15, 24, 8), targets=[{"expr": "sum(e)", "hide": True}, {"expr": "sum(f)"}]),
    ],
}


def test_iter_panels_recurses_into_rows_and_nested_panels() -> None:
    titles = [p["title"] for p in iter_panels(NESTED)]
    assert titles == ["Top", "In open row", "Text", "In collapsed row", "Nested group", "Deep", "Hidden target"]
    with_rows = [p["title"] for p in iter_panels(NESTED, include_rows=True)]
    assert with_rows.count("Collapsed row") == 1
    assert len(with_rows) == len(titles) + 3


def test_iter_panels_reads_pre_grafana_5_rows() -> None:
    old = {"rows": [{"title": "r", "panels": [panel("a", "x"), panel("b", "y")]}]}
    assert [p["title"] for p in iter_panels(old)] == ["a", "b"]


def test_iter_panel_queries_substitutes_and_skips_hidden_targets() -> None:
    queries = list(iter_panel_queries(NESTED))
    assert [(q.panel, q.expr) for q in queries] == [
        ("Top", 'up{namespace=~".*"}'),
        ("In open row", "rate(a_total[1m])"),
        ("In collapsed row", "sum(b)"),
        ("Nested group", "sum(c)"),
        ("Deep", "sum(d)"),
        ("Hidden target", "sum(f)"),
    ]
    assert queries[0].dashboard == "nested"
    assert queries[0].raw_expr == 'up{namespace=~"$namespace"}'
    assert queries[0].legend_format == "{{job}}"
    overridden = next(iter_panel_queries(NESTED, namespace="mlops"))
    assert overridden.expr == 'up{namespace=~"mlops"}'
    window = QueryWindow(range_s=300, scrape_interval_s=2)
    assert list(iter_panel_queries(NESTED, window=window))[1].expr == "rate(a_total[8s])"


def test_panel_titles_are_substituted() -> None:
    dashboard = {"templating": {"list": [{"name": "m", "type": "constant", "query": "credit"}]}, "panels": []}
    dashboard["panels"].append(panel("Latency of $m", "x"))
    assert next(iter_panel_queries(dashboard)).panel == "Latency of credit"


# ---------------------------------------------------------------------------------------------- legends


def test_format_legend() -> None:
    labels = {"__name__": "bff_requests_total", "endpoint": "/predict", "status": "200"}
    assert format_legend("{{endpoint}} {{status}}", labels) == "/predict 200"
    assert format_legend("p99 {{ endpoint }}", labels) == "p99 /predict"
    assert format_legend("{{pod}} {{endpoint}}", labels) == "/predict"  # a missing label is empty
    assert format_legend("", labels) == 'bff_requests_total{endpoint="/predict", status="200"}'
    assert format_legend("__auto", {"status": "200"}) == '{status="200"}'
    assert format_legend("", {}, "sum(rate(x[5m]))") == "sum(rate(x[5m]))"
    assert format_legend("{{pod}}", {}, "sum(x)") == "sum(x)"


# ---------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.123, "percentunit", "12.3%"),
        (1, "percentunit", "100%"),
        (42.5, "percent", "42.5%"),
        (0.0015, "s", "1.5 ms"),
        (0.25, "s", "250 ms"),
        (90, "s", "1.5 min"),
        (7200, "s", "2 hour"),
        (0, "s", "0 s"),
        (1500, "ms", "1.5 s"),
        (0.2, "ms", "200 µs"),
        (1536, "bytes", "1.5 KiB"),
        (3 * 1024**3, "bytes", "3 GiB"),
        (1500, "decbytes", "1.5 kB"),
        (1234, "reqps", "1.23 K req/s"),
        (0.45, "reqps", "0.45 req/s"),
        (1_500_000, "short", "1.5 Mil"),
        (12, "short", "12"),
        (3, "none", "3"),
        (2.0, "", "2"),
        (0.000123, "", "0.000123"),
        (5, "suffix: rows", "5 rows"),
        (5, "prefix:$", "$5"),
        (5, "widgets", "5 widgets"),
        (float("nan"), "s", "NaN"),
        (float("inf"), "s", "+Inf"),
    ],
)
def test_format_value(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_format_value_decimals() -> None:
    assert format_value(0.12345, "percentunit", decimals=1) == "12.3%"
    assert format_value(2, "none", decimals=2) == "2.00"


# ---------------------------------------------------------------------------------------------- layout


def test_layout_expands_collapsed_rows_and_stacks_sections() -> None:
    placed = {p.panel.get("title"): (p.x, p.y, p.w, p.h) for p in layout_panels(NESTED)}
    assert placed["Top"] == (0, 0, 24, 4)
    assert placed["Open row"] == (0, 4, 24, 1)
    assert placed["In open row"] == (0, 5, 12, 8)
    assert placed["Text"] == (12, 5, 12, 8)
    # The collapsed row's panels (saved at y=40) come right below it, then the rest moves down.
    assert placed["Collapsed row"] == (0, 13, 24, 1)
    assert placed["In collapsed row"] == (0, 14, 8, 6)
    assert placed["Nested group"] == (8, 14, 16, 6)
    assert placed["Deep"][1] == 20  # nested, no gridPos: flows below its section
    assert placed["Last row"] == (0, 28, 24, 1)
    assert placed["Hidden target"] == (0, 29, 24, 8)
    assert grid_height(layout_panels(NESTED)) == 37


def test_layout_follows_grid_order_not_json_order() -> None:
    shuffled = {
        "panels": [
            panel("second", "x", pos=(0, 9, 24, 8)),
            {"type": "row", "title": "r", "gridPos": {"x": 0, "y": 8, "w": 24, "h": 1}},
            panel("first", "x", pos=(0, 0, 24, 8)),
        ]
    }
    assert [(p.panel["title"], p.y) for p in layout_panels(shuffled)] == [("first", 0), ("r", 8), ("second", 9)]


def test_layout_without_grid_positions_flows_in_columns() -> None:
    dashboard = {"panels": [panel("a", "x"), panel("b", "x", kind="stat"), panel("c", "x")]}
    placed = [(p.panel["title"], p.x, p.y, p.w, p.h) for p in layout_panels(dashboard, columns=2)]
    assert placed == [("a", 0, 0, 12, 8), ("b", 12, 0, 12, 4), ("c", 0, 8, 12, 8)]


# ---------------------------------------------------------------------------------------------- files


def test_load_dashboard_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"panels": [')
    with pytest.raises(DashboardError, match=r"broken\.json: invalid JSON: .*line 1"):
        load_dashboard(bad)
    not_a_dashboard = tmp_path / "list.json"
    not_a_dashboard.write_text("[1, 2]")
    with pytest.raises(DashboardError, match=r"list\.json: not a Grafana dashboard"):
        load_dashboard(not_a_dashboard)
    with pytest.raises(DashboardError, match="does not exist"):
        load_dashboards(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DashboardError, match=r"holds no \*\.json"):
        load_dashboards(empty)


def test_load_dashboard_unwraps_the_api_export_format(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"dashboard": {"uid": "u/1", "panels": []}, "meta": {}}))
    dashboard = load_dashboard(path)
    assert dashboard.uid == "u/1"
    assert dashboard.name == "u_1"  # safe as a file name


def test_duplicate_uids_are_refused(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"uid": "same", "panels": []}))
    with pytest.raises(DashboardError, match="same uid 'same'"):
        load_dashboards(tmp_path)


# ---------------------------------------------------------------------------------------------- the real dashboards


def test_the_real_dashboards_exist() -> None:
    assert DASHBOARDS, "observability/dashboards holds no dashboard"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_real_panel_yields_a_fully_substituted_query(path: Path) -> None:
    dashboard = load_dashboard(path)
    values = query_variables(dashboard.spec)
    for p in iter_panels(dashboard.spec):
        if is_query_panel(p):
            assert panel_queries(p, values), f"{path.name}: panel {p.get('title')!r} has no PromQL query"
    queries = list(iter_panel_queries(dashboard))
    for q in queries:
        assert q.dashboard == dashboard.uid
        assert not UNRESOLVED.search(q.expr.replace('$"', '"')), f"{path.name}: {q.panel!r}: {q.expr!r}"
    # Every panel is placed on the grid, none outside it.
    placements = layout_panels(dashboard.spec)
    assert {id(p.panel) for p in placements} >= {id(p) for p in iter_panels(dashboard.spec)}
    assert all(p.x >= 0 and p.x + p.w <= 24 for p in placements)


def test_dashboard_names_come_from_uids() -> None:
    assert Dashboard(Path("x/bff.json"), {"uid": "mlops-bff"}).name == "mlops-bff"
    assert Dashboard(Path("x/bff.json"), {}).name == "bff"
