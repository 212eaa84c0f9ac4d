"""Fixtures of the chart tests: the subcharts are packaged and each ci/ scenario rendered once per session."""

from collections.abc import Callable
from pathlib import Path

import pytest
from chart_tools import CHART, CI_VALUES, Doc, helm_dependency_build, helm_template


@pytest.fixture(scope="session")
def chart_dependencies() -> Path:
    """charts/mlops with its file:// subcharts packaged into charts/mlops/charts/ (as Argo CD does)."""
    helm_dependency_build(CHART)
    return CHART


@pytest.fixture(scope="session")
def rendered(chart_dependencies: Path) -> dict[str, list[Doc]]:
    """Scenario name (`01-default`) -> the objects `helm template` renders for ci/<scenario>-values.yaml."""
    return {path.name.removesuffix("-values.yaml"): helm_template(value_files=[path]) for path in CI_VALUES}


@pytest.fixture(scope="session")
def render(chart_dependencies: Path) -> Callable[..., list[Doc]]:
    """Render the default scenario with extra `--set` values."""
    default = CI_VALUES[0]

    def _render(values: dict[str, object] | None = None, value_files: tuple[Path, ...] = ()) -> list[Doc]:
        return helm_template(value_files=[default, *value_files], set_values=values)

    return _render
