"""One monitoring window: the logged predictions of each served version against that version's
reference profile (drift), and the lookback's predictions joined with the outcomes known so far (live
quality). Reads the tables and MLflow; computes with ``mlops_common.drift``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_common.drift import DriftReport, LiveQuality, drift_report, join_outcomes, live_quality
from mlops_common.ground_truth import load_labels
from mlops_common.inference_log import load_inference_log_table
from mlops_common.reference_profile import PROFILE_ARTIFACT
from monitor.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionWindow:
    """What one model version did in the window (drift) and over the lookback (quality)."""

    model: str  # the served model's name, as logged (Triton's)
    version: str
    rows: int  # predictions in the window
    profile: dict[str, Any] | None  # None: the version has no reference profile (trained before them)
    drift: DriftReport | None  # None: no predictions in the window, or no profile
    enough_rows: bool  # drift_min_rows reached: drift may be flagged
    labeled: int  # lookback predictions joined with an outcome
    with_entity: int  # lookback predictions that carry an applicant id (the joinable ones)
    quality: LiveQuality | None  # None: fewer than quality_min_labeled_rows labelled predictions

    @property
    def drifted_features(self) -> list[str]:
        return self.drift.drifted_features if self.drift and self.enough_rows else []

    @property
    def score_drifted(self) -> bool:
        return bool(self.drift and self.enough_rows and self.drift.score_drifted)

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features) or self.score_drifted

    @property
    def label_coverage(self) -> float | None:
        return self.labeled / self.with_entity if self.with_entity else None


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    versions: list[VersionWindow]
    label_recorded_at: pa.ChunkedArray  # when each known label was recorded

    def version(self, version: str | None) -> VersionWindow | None:
        return next((v for v in self.versions if v.version == version), None)

    @property
    def newest_label_recorded_at(self) -> datetime | None:
        return pc.max(self.label_recorded_at).as_py() if len(self.label_recorded_at) else None

    def labels_recorded_since(self, since: datetime | None) -> int:
        if since is None:
            return len(self.label_recorded_at)
        later = pc.greater(self.label_recorded_at, pa.scalar(since, self.label_recorded_at.type))
        return int(pc.sum(later).as_py() or 0)


class ProfileCache:
    """Reference profiles by version, read once from each version's MLflow run."""

    def __init__(self, client: MlflowClient, registered_model_name: str) -> None:
        self.client = client
        self.registered_model_name = registered_model_name
        self._profiles: dict[str, dict[str, Any]] = {}

    def get(self, version: str) -> dict[str, Any] | None:
        """The version's profile; None (asked again next window: MLflow may be down) when it has none."""
        if version not in self._profiles:
            profile = self._load(version)
            if profile is None:
                return None
            self._profiles[version] = profile
        return self._profiles[version]

    def _load(self, version: str) -> dict[str, Any] | None:
        try:
            run_id = self.client.get_model_version(self.registered_model_name, version).run_id
            path = self.client.download_artifacts(run_id, PROFILE_ARTIFACT)
        except (MlflowException, OSError) as err:
            # A version trained before profiles existed, or one deleted from the registry: no drift for it.
            log.warning("version %s of %s has no %s: %s", version, self.registered_model_name, PROFILE_ARTIFACT, err)
            return None
        with open(path) as file:
            return json.load(file)


def _rows_of(table: pa.Table, version: str) -> pa.Table:
    return table.filter(pc.equal(table["model_version"], version))


def evaluate_window(settings: Settings, profiles: ProfileCache, end: datetime) -> Window:
    """The window ``[end - MONITOR_WINDOW_S, end)`` and the lookback ``[end - QUALITY_LOOKBACK_DAYS, end)``."""
    start = end - timedelta(seconds=settings.monitor_window_s)
    lookback_start = min(start, end - timedelta(days=settings.quality_lookback_days))
    model = settings.triton_model_name
    lookback, _ = load_inference_log_table(settings, lookback_start, end, model_name=model)
    window = lookback.filter(
        pc.greater_equal(lookback["timestamp"], pa.scalar(start, lookback.schema.field("timestamp").type))
    )
    labels = load_labels(settings)
    joined = join_outcomes(lookback, labels) if labels.num_rows and lookback.num_rows else None

    versions = sorted(set(pc.unique(lookback["model_version"]).to_pylist()), key=_version_order)
    results = []
    for version in versions:
        rows = _rows_of(window, version)
        profile = profiles.get(version)
        drift = (
            drift_report(
                profile,
                rows,
                threshold=settings.drift_psi_threshold,
                missing_threshold=settings.drift_missing_rate_threshold,
            )
            if profile is not None and rows.num_rows
            else None
        )
        labeled = _rows_of(joined, version) if joined is not None else None
        n_labeled = labeled.num_rows if labeled is not None else 0
        quality = (
            live_quality(labeled["probability"].to_numpy(), labeled["outcome"].to_numpy())
            if labeled is not None and n_labeled >= settings.quality_min_labeled_rows
            else None
        )
        version_lookback = _rows_of(lookback, version)
        results.append(
            VersionWindow(
                model=model,
                version=version,
                rows=rows.num_rows,
                profile=profile,
                drift=drift,
                enough_rows=rows.num_rows >= settings.drift_min_rows,
                labeled=n_labeled,
                with_entity=int(pc.sum(pc.is_valid(version_lookback["entity_id"])).as_py() or 0),
                quality=quality,
            )
        )
    return Window(start, end, results, labels["recorded_at"])


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (1 << 62, version)
