"""Feast without typeguard's instrumentation in the processes that only read definitions
(mlops_common.feast_runtime), and with it where definitions are applied (feature_store).

Each case is a fresh interpreter: whether Feast is instrumented is decided when a process first imports it.
"""

import subprocess
import sys

import pytest

from devstack.components import app_environment

# Whether Feast's FeatureView.__init__ runs typeguard's argument checks, and whether typeguard's decorator is
# its own again after the import.
PROBE = """
import typeguard, feast
checked = "check_argument_types_internal" in feast.FeatureView.__init__.__code__.co_names
print(checked, typeguard.typechecked is typeguard._decorators.typechecked)
"""


@pytest.mark.parametrize(
    ("start", "checked"),
    [
        ("import trainer", "False"),
        ("import batch_scoring", "False"),
        # What uvicorn runs in each worker process of `python -m bff`.
        ("import bff.__main__; bff.__main__.worker_app()", "False"),
        ("import feature_store", "True"),
    ],
)
def test_feast_is_checked_only_where_definitions_are_applied(start: str, checked: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"{start}\n{PROBE}"],
        env=app_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [checked, "True"]
