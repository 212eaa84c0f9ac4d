"""``render_all`` and ``python -m dashboards`` against canned ``query_range`` answers (httpx.MockTransport):
one valid PNG per dashboard of the expected size, per-panel data reported, and one-line errors."""

from __future__ import annotations

import json
import re
import socket
import struct
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import dashboards.__main__ as cli
from dashboards.grafana import DashboardError, iter_panel_queries, layout_panels, load_dashboards
from dashboards.prometheus import PrometheusClient
from dashboards.render import RenderResult, picture_size, render_all

REPO = Path(__file__).resolve().parents[2]
REAL_DASHBOARDS = REPO / "observability" / "dashboards"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
END = 1_800_000_000.0
START = END - 1800


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def canned_prometheus(empty: Callable[[str], bool] = lambda expr: False, calls: list | None = None):
    """A Prometheus that answers every query_range with two series per ``by (...)`` clause (one without),
    labelled by the grouping labels, and no series for queries where ``empty(expr)``."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query_range"
        params = request.url.params
        expr, start, end, step = params["query"], float(params["start"]), float(params["end"]), float(params["step"])
        if calls is not None:
            calls.append((expr, start, end, step))
        result = []
        if not empty(expr):
            grouping = re.findall(r"by \(([^)]*)\)", expr)
            names = [n.strip() for n in grouping[0].split(",") if n.strip() != "le"] if grouping else []
            for k in range(2 if names else 1):
                times = np.arange(start, end + 1e-9, step)
                values = 1.5 + np.sin(times / 300 + k)
                result.append(
                    {
                        "metric": {n: f"{n}-{k}" for n in names},
                        "values": [[float(t), str(v)] for t, v in zip(times, values, strict=True)],
                    }
                )
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": result}})

    return httpx.MockTransport(handler)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[RenderResult, list]:
    calls: list = []
    out = tmp_path_factory.mktemp("pictures")
    transport = canned_prometheus(lambda expr: "nv_gpu" in expr, calls)
    return render_all("http://prometheus.test", REAL_DASHBOARDS, out, START, END, transport=transport), calls


def test_one_valid_png_per_real_dashboard_of_the_expected_size(rendered: tuple[RenderResult, list]) -> None:
    result, _ = rendered
    dashboards = load_dashboards(REAL_DASHBOARDS)
    assert [p.name for p in result] == [f"{d.name}.png" for d in dashboards]
    for path, dashboard in zip(result, dashboards, strict=True):
        expected = picture_size(layout_panels(dashboard.spec))
        assert png_size(path) == expected
        assert expected[1] > 600, "a dashboard of several rows of panels"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 10, f"{path.name} looks blank"
    assert not list(result[0].parent.glob("*.partial"))


def test_every_panel_query_was_evaluated_over_the_window(rendered: tuple[RenderResult, list]) -> None:
    _, calls = rendered
    expected = {q.expr for d in load_dashboards(REAL_DASHBOARDS) for q in iter_panel_queries(d)}
    assert {expr for expr, *_ in calls} == expected
    assert {(start, end, step) for _, start, end, step in calls} == {(START, END, 15.0)}


def test_panels_report_whether_they_had_data(rendered: tuple[RenderResult, list]) -> None:
    result, _ = rendered
    panels = result.panels
    assert len(panels) == sum(len(v) for v in result.panels_by_picture.values())
    # The canned Prometheus has no GPU series: exactly the panels that only ask for them are empty.
    gpu_only = {p for p in panels if p.queries and all("nv_gpu" in q for q in p.queries)}
    assert set(result.empty_panels()) == gpu_only
    assert all(p.series >= 1 and p.points > 0 for p in panels if p not in gpu_only)
    assert {p.dashboard for p in panels} == {d.uid for d in load_dashboards(REAL_DASHBOARDS)}
    queried = {(q.dashboard, q.panel) for d in load_dashboards(REAL_DASHBOARDS) for q in iter_panel_queries(d)}
    assert {(p.dashboard, p.panel) for p in panels} == queried


KINDS = {
    "uid": "kinds",
    "title": "Every kind of panel",
    "templating": {"list": [{"name": "ns", "type": "query", "current": {"value": "$__all"}}]},
    "panels": [
        {"type": "stat", "title": "Stat", "gridPos": {"x": 0, "y": 0, "w": 6, "h": 4},
         "fieldConfig": {"defaults": {"unit": "percentunit", "thresholds": {"steps": [
             {"color": "green", "value": None}, {"color": "red", "value": 0.5}]}}},
         "targets": [{"expr": 'sum(ok{ns=~"$ns"})', "legendFormat": "ok"}]},
        {"type": "gauge", "title": "Gauge", "gridPos": {"x": 6, "y": 0, "w": 6, "h": 4},
         "fieldConfig": {"defaults": {"unit": "percentunit"}}, "targets": [{"expr": "sum(ok)"}]},
        {"type": "table", "title": "Table", "gridPos": {"x": 12, "y": 0, "w": 6, "h": 4},
         "targets": [{"expr": "sum by (pod) (ok)", "legendFormat": "{{pod}}"}]},
        {"type": "text", "title": "Notes", "gridPos": {"x": 18, "y": 0, "w": 6, "h": 4},
         "options": {"content": "# Notes\nRendered from **Prometheus**."}},
        {"type": "row", "title": "Collapsed", "collapsed": True, "gridPos": {"x": 0, "y": 4, "w": 24, "h": 1},
         "panels": [
             {"type": "timeseries", "title": "Empty", "gridPos": {"x": 0, "y": 5, "w": 12, "h": 6},
              "fieldConfig": {"defaults": {"unit": "s"}}, "targets": [{"expr": "sum(missing_metric)"}]},
             {"type": "timeseries", "title": "Many series", "gridPos": {"x": 12, "y": 5, "w": 12, "h": 6},
              "fieldConfig": {"defaults": {"unit": "bytes", "custom": {"fillOpacity": 20}}},
              "targets": [{"expr": "sum by (pod, container, node) (mem)", "legendFormat": "{{pod}} {{node}}"}]},
         ]},
    ],
}  # fmt: skip


def test_every_kind_of_panel_renders_and_empty_ones_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "dashboards"
    folder.mkdir()
    (folder / "kinds.json").write_text(json.dumps(KINDS))
    transport = canned_prometheus(lambda expr: "missing_metric" in expr)
    result = render_all("http://p", folder, tmp_path / "out", START, END, transport=transport, width_px=1200)
    assert result == [tmp_path / "out" / "kinds.png"]
    assert png_size(result[0]) == picture_size(layout_panels(KINDS), 1200)
    summary = {p.panel: p for p in result.panels}
    assert set(summary) == {"Stat", "Gauge", "Table", "Empty", "Many series"}  # no text or row panels
    assert [p.panel for p in result.empty_panels()] == ["Empty"]
    assert summary["Stat"].queries == ('sum(ok{ns=~".*"})',)
    assert summary["Many series"].series == 2
    assert summary["Empty"].query_points == (0,)
    assert summary["Table"].query_points == (240,)


def test_gaps_in_a_series_break_the_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        values = [[0, "1"], [15, "2"], [60, "3"], [75, "NaN"]]
        data = {"resultType": "matrix", "result": [{"metric": {}, "values": values}]}
        return httpx.Response(200, json={"status": "success", "data": data})

    with PrometheusClient("http://p", transport=httpx.MockTransport(handler)) as client:
        (series,) = client.query_range("x", 0, 75, 15)
    assert series.times.tolist() == [0, 15, 30, 60, 75]
    assert np.isnan(series.values[[2, 4]]).all()
    assert series.finite_points == 3
    assert series.last_value() == 3


# ---------------------------------------------------------------------------------------------- errors


def only_dashboard(tmp_path: Path) -> Path:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "kinds.json").write_text(json.dumps(KINDS))
    return folder


def test_a_rejected_query_names_the_dashboard_panel_and_expression(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}
        return httpx.Response(400, json=body)

    transport = httpx.MockTransport(handler)
    with pytest.raises(DashboardError) as raised:
        render_all("http://p", only_dashboard(tmp_path), tmp_path / "out", START, END, transport=transport)
    message = str(raised.value)
    assert message == (
        "kinds.json: panel 'Stat': Prometheus rejected 'sum(ok{ns=~\".*\"})': bad_data: parse error: unexpected \"}\""
    )


def test_an_unreachable_prometheus_is_named(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(DashboardError, match=r"cannot reach Prometheus at http://prom\.example:9090: .*refused"):
        render_all(
            "http://prom.example:9090/", only_dashboard(tmp_path), tmp_path / "out", START, END,
            transport=httpx.MockTransport(handler),
        )  # fmt: skip


def test_something_that_is_not_prometheus_is_named(tmp_path: Path) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(404, text="<html>Not Found</html>"))
    with pytest.raises(DashboardError, match=r"http://p does not answer like Prometheus' API: HTTP 404"):
        render_all("http://p", only_dashboard(tmp_path), tmp_path / "out", START, END, transport=transport)


def test_an_empty_time_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DashboardError, match="empty time range"):
        render_all("http://p", REAL_DASHBOARDS, tmp_path, END, START, transport=canned_prometheus())


# ---------------------------------------------------------------------------------------------- the CLI


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_renders_and_summarises(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = canned_prometheus(lambda expr: "nv_gpu" in expr)
    monkeypatch.setattr(cli, "render_all", partial(render_all, transport=transport))
    code, out, err = run_cli(capsys, "render", "--prometheus-url", "http://p", "--out", str(tmp_path), "--range", "1h")
    assert code == 0, err
    lines = out.splitlines()
    dashboards = load_dashboards(REAL_DASHBOARDS)
    assert [line.split()[0] for line in lines] == [str(tmp_path / f"{d.name}.png") for d in dashboards]
    for d, line in zip(dashboards, lines, strict=True):
        queries = list(iter_panel_queries(d))
        panels = dict.fromkeys(q.panel for q in queries)
        gpu_only = [t for t in panels if all("nv_gpu" in q.expr for q in queries if q.panel == t)]
        assert (f"no data: {'; '.join(gpu_only)}" if gpu_only else "every panel has data") in line
    assert all(png_size(p) for p in tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: d / "missing", r"dashboards folder .*missing does not exist"),
        (lambda d: (d / "bad.json").write_text("{not json") and d, r"bad\.json: invalid JSON"),
    ],
    ids=["missing-folder", "invalid-json"],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, setup, expected: str) -> None:
    folder = setup(tmp_path)
    code, _, err = run_cli(capsys, "render", "--dashboards", str(folder), "--out", str(tmp_path / "out"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert re.search(expected, err), err
    assert "Traceback" not in err


def test_cli_unreachable_prometheus_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, _, err = run_cli(capsys, "render", "--prometheus-url", url, "--out", str(tmp_path))
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert f"cannot reach Prometheus at {url}" in err


def test_cli_bad_duration_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["render", "--range", "soon"])
    assert exited.value.code == 2
    assert "invalid duration 'soon'" in capsys.readouterr().err


def test_cli_lists_the_substituted_queries(capsys) -> None:
    code, out, _ = run_cli(capsys, "queries", "--scrape-interval", "2s", "--range", "5m")
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == sum(1 for d in load_dashboards(REAL_DASHBOARDS) for _ in iter_panel_queries(d))
    assert all(len(r) == 3 and r[0].endswith(".json") and "$__" not in r[2] for r in rows)
