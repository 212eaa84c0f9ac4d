"""The one Prometheus call the renderer needs: ``GET /api/v1/query_range``, with errors that name the URL
(unreachable, not a Prometheus) or the expression (rejected)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx
import numpy as np

from dashboards.grafana import DashboardError


class PrometheusError(DashboardError):
    """Prometheus cannot be reached or does not answer like Prometheus."""


class QueryRejected(DashboardError):
    """Prometheus refused an expression (parse error, bad range, ...); ``reason`` is Prometheus' message."""

    def __init__(self, expr: str, reason: str) -> None:
        super().__init__(f"Prometheus rejected {expr!r}: {reason}")
        self.expr = expr
        self.reason = reason


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    times: np.ndarray  # epoch seconds, float64
    values: np.ndarray  # float64; NaN where Prometheus said NaN or the series had a gap

    @property
    def finite_points(self) -> int:
        return int(np.isfinite(self.values).sum())

    def last_value(self) -> float | None:
        finite = self.values[np.isfinite(self.values)]
        return float(finite[-1]) if finite.size else None


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PrometheusClient:
    """A small synchronous client; ``transport`` lets tests answer with canned JSON."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        try:
            response = self._client.get("/api/v1/query_range", params=params)
        except httpx.TimeoutException:
            raise PrometheusError(f"Prometheus at {self.url} did not answer in time (query {expr!r})") from None
        except (httpx.TransportError, httpx.InvalidURL) as err:
            raise PrometheusError(
                f"cannot reach Prometheus at {self.url}: {_one_line(str(err)) or type(err).__name__}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("status") not in ("success", "error"):
            raise PrometheusError(
                f"{self.url} does not answer like Prometheus' API: HTTP {response.status_code} on /api/v1/query_range"
                f" ({_one_line(response.text, 120)!r})"
            )
        if body["status"] == "error":
            reason = f"{body.get('errorType', 'error')}: {body.get('error', '')}"
            # 400/422: the expression; 503/500: Prometheus itself (timeout, overload).
            if response.status_code in (400, 422):
                raise QueryRejected(expr, _one_line(reason))
            raise PrometheusError(f"Prometheus at {self.url} failed on {expr!r}: HTTP {response.status_code} {reason}")
        data = body.get("data") or {}
        return [_series(item, step) for item in data.get("result") or [] if isinstance(item, dict)]


def _series(item: dict, step: float) -> Series:
    labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
    points = item.get("values")
    if points is None and item.get("value") is not None:  # an instant vector, should a server send one
        points = [item["value"]]
    times = np.array([float(t) for t, _ in points or []], dtype=float)
    values = np.array([float(v) for _, v in points or []], dtype=float)
    return _with_gaps(Series(labels, times, values), step)


def _with_gaps(series: Series, step: float) -> Series:
    """NaN between points further apart than 1.5 steps, so a line breaks where the series was absent
    (Grafana draws gaps too) instead of joining across them."""
    if series.times.size < 2 or not math.isfinite(step) or step <= 0:
        return series
    gaps = np.nonzero(np.diff(series.times) > 1.5 * step)[0]
    if not gaps.size:
        return series
    times = np.insert(series.times, gaps + 1, series.times[gaps] + step)
    values = np.insert(series.values, gaps + 1, np.nan)
    return Series(series.labels, times, values)
