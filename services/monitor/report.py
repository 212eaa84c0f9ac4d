"""The per-window HTML report of one version: a table of the figures and one plot per feature and of
the score (training/holdout share per bin against the window's), as a self-contained page in S3."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in a pod
import matplotlib.pyplot as plt
import numpy as np

from mlops_common.features import FEATURE_NAMES
from monitor.window import VersionWindow, Window

COLUMNS = 4


def _bars(axis: Any, title: str, reference: list[float], live: list[float], psi: float, flagged: bool) -> None:
    x = np.arange(len(reference))
    axis.bar(x - 0.2, reference, width=0.4, label="reference", color="#8c8c8c")
    axis.bar(x + 0.2, live, width=0.4, label="window", color="#d62728" if flagged else "#1f77b4")
    axis.set_title(f"{title}\nPSI {psi:.3f}" + (" DRIFT" if flagged else ""), fontsize=8)
    axis.tick_params(labelsize=6)
    axis.set_xticks([])


def _figure(version: VersionWindow) -> str:
    """The bins of every feature and of the score, as a base64 PNG."""
    assert version.profile is not None
    assert version.drift is not None
    panels = [*FEATURE_NAMES, "score"]
    rows = -(-len(panels) // COLUMNS)
    figure, axes = plt.subplots(rows, COLUMNS, figsize=(3.2 * COLUMNS, 2.4 * rows), squeeze=False)
    flagged = set(version.drifted_features)
    for axis, name in zip(axes.flat, panels, strict=False):
        if name == "score":
            reference = version.profile["score"]["fractions"]
            live = version.drift.score_fractions
            _bars(axis, "default probability", reference, live, version.drift.score_psi, version.score_drifted)
        else:
            drift = version.drift.features[name]
            reference = version.profile["features"][name]["fractions"]
            _bars(axis, name, reference, drift.live_fractions, drift.psi, name in flagged)
    for axis in axes.flat[len(panels) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=6)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_report(window: Window, version: VersionWindow, threshold: float) -> str:
    """A self-contained HTML page (the plot inline) about one version in one window."""
    quality = version.quality
    lines = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(version.model)} v{html.escape(version.version)}, {window.end:%Y-%m-%d %H:%M} UTC</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}.drift{color:#d62728;font-weight:bold}</style>",
        f"<h1>{html.escape(version.model)} version {html.escape(version.version)}</h1>",
        f"<p>Window {window.start:%Y-%m-%d %H:%M:%S} to {window.end:%Y-%m-%d %H:%M:%S} UTC: {version.rows} predictions"
        f"{'' if version.enough_rows else ' (too few for a drift verdict)'}. PSI threshold {threshold}.</p>",
    ]
    if version.drift is None:
        lines.append("<p>No drift figures: no predictions in the window, or no reference profile for this version.</p>")
    else:
        lines.append(
            "<table><tr><th>feature</th><th>PSI</th><th>missing (reference)</th><th>missing (window)</th></tr>"
        )
        for name, drift in version.drift.features.items():
            css = " class='drift'" if name in version.drifted_features else ""
            lines.append(
                f"<tr{css}><td>{name}</td><td>{drift.psi:.4f}</td><td>{drift.missing_rate_reference:.3f}</td>"
                f"<td>{drift.missing_rate_live:.3f}</td></tr>"
            )
        css = " class='drift'" if version.score_drifted else ""
        lines.append(f"<tr{css}><td>score</td><td>{version.drift.score_psi:.4f}</td><td></td><td></td></tr></table>")
        lines.append(f"<img alt='bins per feature' src='data:image/png;base64,{_figure(version)}'>")
    coverage = version.label_coverage
    lines.append(
        f"<h2>Live quality</h2><p>{version.labeled} labelled predictions "
        f"(coverage {_number(coverage, 3)} of those with an applicant id).</p>"
    )
    if quality is not None:
        lines.append(
            "<table>"
            f"<tr><td>ROC AUC</td><td>{_number(quality.roc_auc)}</td></tr>"
            f"<tr><td>log loss</td><td>{_number(quality.log_loss)}</td></tr>"
            f"<tr><td>mean probability</td><td>{_number(quality.mean_probability)}</td></tr>"
            f"<tr><td>observed default rate</td><td>{_number(quality.observed_rate)}</td></tr>"
            f"<tr><td>expected calibration error</td><td>{_number(quality.expected_calibration_error)}</td></tr>"
            "</table>"
        )
    return "\n".join(lines)


def report_key(prefix: str, window: Window, version: VersionWindow) -> str:
    return f"{prefix}/{version.model}/{version.version}/{window.end:%Y-%m-%dT%H%M%SZ}.html"
