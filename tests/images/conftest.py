"""Fixtures of the image tests. The chart tests' helpers (tests/charts/chart_tools.py) are shared."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "charts"))

from chart_tools import REPO, repository_files
from image_tools import parse_requirements


@pytest.fixture(scope="session")
def dockerfiles() -> list[Path]:
    """Every Dockerfile of the repository."""
    return [REPO / name for name in repository_files() if Path(name).name == "Dockerfile"]


@pytest.fixture(scope="session")
def lock_versions() -> dict[str, str]:
    """Package name (normalized) -> version pinned in requirements.lock."""
    return parse_requirements(REPO / "requirements.lock")
