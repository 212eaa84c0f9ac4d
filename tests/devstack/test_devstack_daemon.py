"""The Daemon lifecycle with a throwaway HTTP server: start, idempotence, stale pid files, restart on
configuration change, stop of the whole process group, and errors that carry the log."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devstack.__main__ import main
from devstack.components import app_environment
from devstack.processes import Daemon, DaemonStartError, free_port, http_ok, pid_alive, recorded_daemons
from devstack.settings import Settings
from devstack.stack import LocalStack


def http_daemon(tmp_path: Path, port: int, *, name: str = "web", extra: tuple[str, ...] = ()) -> Daemon:
    return Daemon(
        name=name,
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", *extra],
        log_path=tmp_path / "logs" / f"{name}.log",
        health=f"http://127.0.0.1:{port}/",
        state_dir=tmp_path / "run",
        cwd=tmp_path,
        address=f"http://127.0.0.1:{port}",
        die_with_parent=True,
    )


@pytest.fixture
def web(tmp_path: Path):
    daemon = http_daemon(tmp_path, free_port())
    yield daemon
    daemon.stop()


def test_start_writes_pid_and_record_and_is_healthy(web: Daemon) -> None:
    web.ensure_running(timeout_s=20)
    pid = web.pid()
    assert pid is not None
    assert web.is_healthy()
    assert web.pid_path.read_text().strip() == str(pid)
    record = json.loads(web.record_path.read_text())
    assert record["pid"] == pid
    assert record["health_url"] == web.health_url
    assert record["fingerprint"] == web.fingerprint()


def test_ensure_running_leaves_a_healthy_daemon_alone(web: Daemon, tmp_path: Path) -> None:
    web.ensure_running(timeout_s=20)
    pid = web.pid()
    # A second object, as a second `devstack up` would build it, finds the first through its pid file.
    again = http_daemon(tmp_path, int(web.health_url.rsplit(":", 1)[1].strip("/")))
    again.ensure_running(timeout_s=20)
    assert again.pid() == pid


def test_stale_pid_file_is_cleaned(tmp_path: Path) -> None:
    daemon = http_daemon(tmp_path, free_port())
    daemon.state_dir.mkdir(parents=True)
    # A pid that exists (our own) but with another start time: a recycled pid, not our daemon.
    daemon.pid_path.write_text(f"{os.getpid()}\n")
    daemon.record_path.write_text(json.dumps({"name": "web", "pid": os.getpid(), "start_time": 1}))
    assert daemon.pid() is None
    assert not daemon.pid_path.exists()
    assert not daemon.record_path.exists()
    try:
        daemon.ensure_running(timeout_s=20)
        assert daemon.is_healthy()
    finally:
        daemon.stop()


def test_configuration_change_restarts(tmp_path: Path) -> None:
    port = free_port()
    first = http_daemon(tmp_path, port).ensure_running(timeout_s=20)
    first_pid = first.pid()
    changed = http_daemon(tmp_path, port, extra=("--directory", str(tmp_path)))
    try:
        changed.ensure_running(timeout_s=20)
        assert changed.pid() not in (None, first_pid)
        assert changed.is_healthy()
    finally:
        changed.stop()
        first.stop()


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    port = free_port()
    child_pid_file = tmp_path / "child.pid"
    # A parent that forks a long-running child, like MLflow's uvicorn worker or Triton's stubs.
    script = (
        "import subprocess, sys, http.server; "
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(child_pid_file)!r}, 'w').write(str(child.pid)); "
        f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    daemon = Daemon(
        name="parent",
        argv=[sys.executable, "-c", script],
        log_path=tmp_path / "parent.log",
        health=f"http://127.0.0.1:{port}/",
        cwd=tmp_path,
        die_with_parent=True,
    ).start(timeout_s=20)
    child_pid = int(child_pid_file.read_text())
    assert pid_alive(child_pid)
    assert daemon.stop()
    deadline = time.monotonic() + 5
    while pid_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child_pid)
    assert not daemon.stop()  # already stopped: nothing to do


def test_failed_start_reports_the_log_tail(tmp_path: Path) -> None:
    daemon = Daemon(
        name="broken",
        argv=[sys.executable, "-c", "import sys; print('boom: config invalid'); sys.exit(3)"],
        log_path=tmp_path / "broken.log",
        health=f"http://127.0.0.1:{free_port()}/",
        state_dir=tmp_path / "run",
    )
    daemon.log_path.write_text("an earlier run's output\n")
    with pytest.raises(DaemonStartError) as err:
        daemon.ensure_running(timeout_s=20)
    assert "earlier run" not in str(err.value)
    assert "broken exited before it became healthy" in str(err.value)
    assert "boom: config invalid" in str(err.value)
    assert str(daemon.log_path) in str(err.value)
    assert daemon.pid() is None


def test_start_timeout_stops_the_process_and_reports(tmp_path: Path) -> None:
    daemon = Daemon(
        name="slow",
        argv=[sys.executable, "-c", "print('still warming up', flush=True); import time; time.sleep(60)"],
        log_path=tmp_path / "slow.log",
        health=f"http://127.0.0.1:{free_port()}/",
        state_dir=tmp_path / "run",
        die_with_parent=True,
    )
    with pytest.raises(DaemonStartError, match=r"(?s)not healthy after.*still warming up"):
        daemon.start(timeout_s=1.5)
    assert daemon.pid() is None


def test_refuses_a_port_already_answered_by_another_process(tmp_path: Path) -> None:
    port = free_port()
    foreign = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        with pytest.raises(DaemonStartError, match="not started by devstack already answers"):
            http_daemon(tmp_path, port).ensure_running(timeout_s=5)
    finally:
        foreign.terminate()
        foreign.wait()


def test_local_stack_manages_app_processes(tmp_path: Path) -> None:
    """`start_app` is how `make demo` runs the BFF, model sync and log worker: status reports them,
    a crashed one shows as down, and `down` stops them."""
    stack = LocalStack(Settings(stack_dir=tmp_path / ".stack"))
    port = free_port()
    app = stack.start_app(
        "web-app",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        health=f"http://127.0.0.1:{port}/",
    )
    try:
        assert app.env["MLFLOW_TRACKING_URI"] == stack.settings.mlflow_tracking_uri  # platform_env applied
        assert (tmp_path / ".stack" / "logs" / "web-app.log").exists()
        [status] = [c for c in stack.status() if c.name == "web-app"]
        assert status.up
        assert status.pid == app.pid()
        assert [d.name for d in recorded_daemons(stack.settings.run_dir)] == ["web-app"]
        assert stack.down() == ["web-app"]
        assert not [c for c in stack.status() if c.name == "web-app"]
    finally:
        app.stop()


def test_status_reports_a_crashed_app(tmp_path: Path) -> None:
    stack = LocalStack(Settings(stack_dir=tmp_path / ".stack"))
    port = free_port()
    app = stack.start_app(
        "crashy",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        health=f"http://127.0.0.1:{port}/",
    )
    pid = app.pid()
    os.kill(pid, 9)
    app._popen.wait()
    [status] = [c for c in stack.status() if c.name == "crashy"]
    assert not status.up
    assert "exited" in status.detail
    assert stack.down() == []
    assert not list(stack.settings.run_dir.iterdir())


def test_die_with_parent_daemon_follows_a_killed_session(tmp_path: Path) -> None:
    """A test session killed with SIGKILL (no teardown) must not leave its servers running."""
    port = free_port()
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from devstack.processes import Daemon
        daemon = Daemon(
            name="orphan",
            argv=[sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
            log_path=Path({str(tmp_path / "orphan.log")!r}),
            health="http://127.0.0.1:{port}/",
            die_with_parent=True,
        ).start(timeout_s=20)
        print(daemon.pid(), flush=True)
        time.sleep(300)
    """)
    env = app_environment()
    session = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        daemon_pid = int(session.stdout.readline())
        assert pid_alive(daemon_pid)
    finally:
        session.kill()
        session.wait()
    deadline = time.monotonic() + 5
    while pid_alive(daemon_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(daemon_pid)


def test_cli_start_app_and_stop_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STACK_DIR", str(tmp_path / ".stack"))
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    health = f"http://127.0.0.1:{port}/"
    try:
        assert main(["start-app", "web", "--health", health, "--", *command]) == 0
        assert "web up, pid" in capsys.readouterr().out
        record = json.loads((tmp_path / ".stack" / "run" / "web.json").read_text())
        assert record["argv"] == command
        assert http_ok(health)
    finally:
        assert main(["stop-app", "web"]) == 0
    assert "web stopped" in capsys.readouterr().out
    assert not http_ok(health)


def test_a_daemon_does_not_inherit_the_starting_process_prometheus_directory(tmp_path: Path, monkeypatch) -> None:
    """`import feast` in the starting process (the drift demo, the tests) sets these to its own temporary
    directory; a daemon that inherited them would fail to start once that directory is gone."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "gone"))
    monkeypatch.setenv("PROMETHEUS_MULTIPROCESS_DIR", str(tmp_path / "gone"))
    monkeypatch.setenv("DEVSTACK_TEST_INHERITED", "yes")
    port = free_port()
    script = (
        "import json, os, http.server; "
        f"open({str(tmp_path / 'env.json')!r}, 'w').write(json.dumps(dict(os.environ))); "
        f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    daemon = Daemon(
        name="env",
        argv=[sys.executable, "-c", script],
        log_path=tmp_path / "env.log",
        health=f"http://127.0.0.1:{port}/",
        cwd=tmp_path,
        env={"EXPLICIT": "1"},
        die_with_parent=True,
    ).start(timeout_s=20)
    try:
        seen = json.loads((tmp_path / "env.json").read_text())
    finally:
        daemon.stop()
    assert "PROMETHEUS_MULTIPROC_DIR" not in seen
    assert "PROMETHEUS_MULTIPROCESS_DIR" not in seen
    assert (seen["DEVSTACK_TEST_INHERITED"], seen["EXPLICIT"]) == ("yes", "1")
