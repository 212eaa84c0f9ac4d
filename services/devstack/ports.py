"""Which of the stack's ports another process holds, and whose stack that process belongs to.

Two clones on one machine would otherwise collide halfway through ``up``: the second would find
PostgreSQL ready, then fail on SeaweedFS's port. ``up`` checks every port first and names the owner.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from devstack.instance import STACK_FILE


@dataclass(frozen=True)
class PortClaim:
    """A port the stack's ``component`` listens on; ``setting`` is the variable that moves it."""

    component: str
    port: int
    setting: str
    # True while the stack's own process for the component runs: then the port is rightly taken.
    ours: bool = False


def _listeners() -> dict[int, int | None]:
    """Listening TCP port -> pid (None where the pid is not visible to this user)."""
    return {
        conn.laddr.port: conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr
    }


def stack_dir_of(pid: int) -> Path | None:
    """The stack directory a process belongs to: its working directory is inside it (SeaweedFS,
    MLflow, Triton) or is the clone that holds it (the platform's applications)."""
    try:
        cwd = Path(psutil.Process(pid).cwd())
    except (psutil.Error, OSError):
        return None
    for folder in (cwd, *cwd.parents):
        if (folder / STACK_FILE).is_file():
            return folder
        if (folder / ".stack" / STACK_FILE).is_file():
            return folder / ".stack"
    return None


def describe_owner(pid: int | None) -> str:
    if pid is None:
        return "a process this user cannot see (another user's?)"
    stack_dir = stack_dir_of(pid)
    if stack_dir is not None:
        clone = stack_dir.parent if stack_dir.name == ".stack" else stack_dir
        return f"the local stack in {stack_dir} (stop it with `make -C {clone} stack-down`)"
    try:
        command = " ".join(psutil.Process(pid).cmdline())[:120] or "?"
    except psutil.Error:
        command = "?"
    return f"pid {pid} ({command}), not a devstack process"


def port_conflicts(claims: Iterable[PortClaim]) -> list[str]:
    """One line per owner of claimed ports that the stack's own processes do not hold."""
    listeners = _listeners()
    taken: dict[str, list[PortClaim]] = defaultdict(list)
    for claim in claims:
        if not claim.ours and claim.port in listeners:
            taken[describe_owner(listeners[claim.port])].append(claim)
    lines = []
    for owner, owned in taken.items():
        by_component: dict[str, list[str]] = defaultdict(list)
        for claim in owned:
            by_component[claim.component].append(str(claim.port))
        ports = ", ".join(f"{component} {'/'.join(ports)}" for component, ports in by_component.items())
        settings = ", ".join(dict.fromkeys(claim.setting for claim in owned))
        lines.append(f"{owner} holds ports of this stack: {ports}; stop it, or move them with {settings}")
    return lines
