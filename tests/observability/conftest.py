"""Tests of the alert rules against promtool and of the services' metrics. The chart tests' helpers
(tests/charts/chart_tools.py, observability_files.py) are shared."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "charts"))
