"""Reading pinned requirement files (requirements.lock, services/*/requirements.txt)."""

from pathlib import Path


def normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def parse_requirements(path: Path) -> dict[str, str]:
    """Package name (normalized) -> pinned version."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalize(name.split("[")[0])] = version
    return pins
