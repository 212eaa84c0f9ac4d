"""Fixtures of the Argo CD tests. The chart tests' helpers (tests/charts/chart_tools.py) are shared."""

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "charts"))

from chart_tools import REPO, Doc

ARGOCD = REPO / "argocd"


@pytest.fixture(scope="session")
def applications() -> list[Doc]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted((ARGOCD / "applications").glob("*.yaml"))]
    assert docs, "no Applications under argocd/applications"
    return docs


@pytest.fixture(scope="session")
def project() -> Doc:
    return yaml.safe_load((ARGOCD / "project.yaml").read_text())
