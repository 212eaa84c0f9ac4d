"""Detached, health-checked processes: the building block for every daemon the stack or a test starts.

A ``Daemon`` is a command line plus where its output and pid go. ``ensure_running`` is idempotent: a
healthy instance recorded in the pid file is left alone, a stale pid file is removed, a new process is
started in its own session (so it outlives the command that started it and can be stopped as a
group), and the call returns only once the health check passes, or raises ``DaemonStartError``
with the tail of the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlops_common.processes import die_with_parent

HealthCheck = Callable[[], bool]
log = logging.getLogger(__name__)

# Never inherited by a daemon (it outlives the process that starts it): `import feast` sets these to a
# temporary directory of the importing process, and a platform process started with them keeps its
# Prometheus values in files there, and fails to start once that directory is gone.
PROCESS_LOCAL_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


# Written to the log before each start, so an error shows only the latest attempt's output.
START_MARKER = "--- devstack"
# Ports handed out by free_port in this process: the OS may offer a just-closed port again.
_handed_out_ports: set[int] = set()


class DaemonStartError(RuntimeError):
    """A daemon exited or did not become healthy in time; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, never the same one twice in this process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise RuntimeError("no free TCP port found")


def free_port_block(count: int, host: str = "127.0.0.1", low: int = 20000, high: int = 32000) -> int:
    """First port of ``count`` consecutive ports nothing listens on, below the ephemeral range
    (so ``free_port`` and outgoing connections do not take them meanwhile)."""
    for _ in range(100):
        base = random.randrange(low, high - count)
        ports = range(base, base + count)
        if _handed_out_ports.isdisjoint(ports) and all(_bindable(host, port) for port in ports):
            _handed_out_ports.update(ports)
            return base
    raise RuntimeError(f"no block of {count} free TCP ports found")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tcp_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when ``url`` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_check(url: str, timeout_s: float = 2.0) -> HealthCheck:
    return lambda: http_ok(url, timeout_s)


def wait_until_healthy(
    check: HealthCheck | str,
    timeout_s: float,
    *,
    interval_s: float = 0.2,
    is_alive: Callable[[], bool] | None = None,
    describe: str = "service",
) -> float:
    """Poll ``check`` (a function or a URL) until it passes; returns the seconds waited.

    ``is_alive`` lets the caller fail fast when the process behind the check has already died,
    instead of waiting out the whole timeout.
    """
    probe = http_check(check) if isinstance(check, str) else check
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        if probe():
            return time.monotonic() - start
        if is_alive is not None and not is_alive():
            raise DaemonStartError(f"{describe} exited before it became healthy")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{describe} not healthy after {timeout_s:.0f}s")
        time.sleep(interval_s)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when it is gone or a zombie.

    Stored next to the pid so a recycled pid is never mistaken for our daemon.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def pid_alive(pid: int) -> bool:
    return process_start_time(pid) is not None


@dataclass
class Daemon:
    """A long-running process started detached, with a log file and optionally a pid file.

    With ``state_dir`` set, the pid (``<state_dir>/<name>.pid``) and a JSON record (argv, health
    URL, address, start time) are written so another process (``python -m devstack down``) can find,
    check and stop it later. Without it, the daemon is only known to this Python object (tests).
    """

    name: str
    argv: Sequence[str]
    log_path: Path
    health: HealthCheck | str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    state_dir: Path | None = None
    # What `status` prints: an address or URL for humans.
    address: str = ""
    # Only for daemons owned by a test session: they must not outlive it.
    die_with_parent: bool = False
    stop_timeout_s: float = 15.0
    # Runs just before a new process starts (create directories, remove stale files).
    before_start: Callable[[], None] | None = field(default=None, repr=False)
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    # -- identity ---------------------------------------------------------------------------------
    @property
    def pid_path(self) -> Path | None:
        return self.state_dir / f"{self.name}.pid" if self.state_dir else None

    @property
    def record_path(self) -> Path | None:
        return self.state_dir / f"{self.name}.json" if self.state_dir else None

    @property
    def health_url(self) -> str | None:
        return self.health if isinstance(self.health, str) else None

    def pid(self, *, cleanup: bool = True) -> int | None:
        """Pid of the running daemon, or None; removes a pid file left by a dead process unless
        ``cleanup`` is False (``status`` reports a crashed daemon instead of forgetting it)."""
        if self._popen is not None:
            return self._popen.pid if self._popen.poll() is None else None
        if self.pid_path is None or not self.pid_path.exists():
            return None
        try:
            pid = int(self.pid_path.read_text().strip())
        except ValueError:
            pid = -1
        started = process_start_time(pid) if pid > 0 else None
        if started is not None and started == self._recorded_start_time():
            return pid
        if cleanup:
            self._remove_state_files()
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def is_healthy(self) -> bool:
        if not self.is_running():
            return False
        return self.health is None or self._probe()

    def _probe(self) -> bool:
        if self.health is None:
            return False
        return http_ok(self.health) if isinstance(self.health, str) else self.health()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the log, from the latest start on: earlier runs' lines would mislead."""
        text = tail(self.log_path, lines)
        marker = text.rfind(START_MARKER)
        return text[marker:] if marker >= 0 else text

    # -- lifecycle --------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of what defines the process (command line, explicit env, cwd); env values stay secret."""
        spec = [list(self.argv), sorted(self.env.items()), str(self.cwd)]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]

    def ensure_running(self, timeout_s: float = 60.0) -> Daemon:
        """Start unless a healthy instance with the same configuration is already running (one
        started with other settings is restarted); wait until healthy."""
        if self.is_running() and self._read_record().get("fingerprint", self.fingerprint()) != self.fingerprint():
            log.info("%s: configuration changed, restarting it", self.name)
            self.stop()
        if self.is_running():
            if self.is_healthy():
                return self
            # Running but not (yet) healthy: it may still be starting; give it the timeout,
            # then replace it.
            try:
                self._wait_healthy(timeout_s)
                return self
            except DaemonStartError:
                self.stop()
        return self.start(timeout_s)

    def start(self, timeout_s: float = 60.0) -> Daemon:
        """Start a new instance (fails if one is recorded as running) and wait until healthy."""
        if self.is_running():
            raise DaemonStartError(f"{self.name} is already running (pid {self.pid()})")
        if self.health is not None and self._probe():
            # Our health check would pass on the other process while ours dies on a taken port.
            raise DaemonStartError(
                f"{self.name}: something not started by devstack already answers at "
                f"{self.address or self.health_url}; stop it or choose another port"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.before_start is not None:
            self.before_start()
        inherited = {k: v for k, v in os.environ.items() if k not in PROCESS_LOCAL_VARIABLES}
        env = {**inherited, **self.env}
        with self.log_path.open("ab") as log_file:
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            log_file.write(f"\n{START_MARKER} {started} starting: {' '.join(self.argv)}\n".encode())
            log_file.flush()
            try:
                self._popen = subprocess.Popen(
                    list(self.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=die_with_parent if self.die_with_parent else None,
                )
            except OSError as err:
                raise DaemonStartError(f"{self.name}: cannot run {self.argv[0]}: {err}") from err
        self._write_state_files(self._popen.pid)
        self._wait_healthy(timeout_s)
        return self

    def _wait_healthy(self, timeout_s: float) -> None:
        if self.health is None:
            return
        try:
            wait_until_healthy(self.health, timeout_s, is_alive=self.is_running, describe=self.name)
        except (TimeoutError, DaemonStartError) as err:
            where = f" ({self.health})" if isinstance(self.health, str) else ""
            message = f"{err}{where}; log {self.log_path}, last lines:\n{self.log_tail()}"
            if isinstance(err, TimeoutError):
                # Do not leave a half-started daemon behind to confuse the next attempt.
                self.stop()
            raise DaemonStartError(message) from err

    def stop(self) -> bool:
        """SIGTERM the daemon's process group, SIGKILL after ``stop_timeout_s``; True if it ran."""
        pid = self.pid()
        if pid is None:
            self._remove_state_files()
            return False
        self._signal_group(pid, signal.SIGTERM)
        if not self._wait_gone(pid, self.stop_timeout_s):
            self._signal_group(pid, signal.SIGKILL)
            self._wait_gone(pid, 5.0)
        self._remove_state_files()
        return True

    def _signal_group(self, pid: int, sig: signal.Signals) -> None:
        # The daemon leads its own session and process group: signalling the group also stops the
        # workers it forked (uvicorn workers, Triton's Python backend stubs).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout=0.1)
                if self._popen.poll() is not None:
                    return True
            elif process_start_time(pid) is None:
                return True
            else:
                time.sleep(0.1)
        return False

    # -- state files ------------------------------------------------------------------------------
    def _write_state_files(self, pid: int) -> None:
        if self.pid_path is None or self.record_path is None:
            return
        record = {
            "name": self.name,
            "pid": pid,
            "start_time": process_start_time(pid),
            "fingerprint": self.fingerprint(),
            "argv": list(self.argv),
            "health_url": self.health_url,
            "address": self.address,
            "log_path": str(self.log_path),
        }
        self.record_path.write_text(json.dumps(record, indent=2))
        self.pid_path.write_text(f"{pid}\n")

    def _read_record(self) -> dict:
        if self.record_path is None:
            return {}
        try:
            return json.loads(self.record_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _recorded_start_time(self) -> int | None:
        return self._read_record().get("start_time")

    def _remove_state_files(self) -> None:
        for path in (self.pid_path, self.record_path):
            if path is not None:
                path.unlink(missing_ok=True)

    @classmethod
    def from_record(cls, record_path: Path) -> Daemon:
        """Rebuild a daemon from the JSON record another process wrote (for status and down)."""
        record = json.loads(record_path.read_text())
        return cls(
            name=record["name"],
            argv=record["argv"],
            log_path=Path(record["log_path"]),
            health=record.get("health_url"),
            state_dir=record_path.parent,
            address=record.get("address", ""),
        )


def recorded_daemons(state_dir: Path) -> list[Daemon]:
    """Every daemon with a record in ``state_dir``, oldest first (stop them in reverse)."""
    records = sorted(state_dir.glob("*.json"), key=lambda path: path.stat().st_mtime)
    daemons = []
    for path in records:
        with contextlib.suppress(json.JSONDecodeError, KeyError, FileNotFoundError):
            daemons.append(Daemon.from_record(path))
    return daemons
