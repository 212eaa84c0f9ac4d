"""The workflow tests share the chart tests' helpers (tests/charts/chart_tools.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "charts"))
