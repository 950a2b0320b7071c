from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from pitcrew.stack.processes import ProcessRegistry, port_in_use

# A parent that forks a child into its process group, the way Airflow and Triton do.
FORKING = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"


# A parent whose child moves to a process group of its own, as Airflow's task supervisors do.
FORKING_OWN_GROUP = FORKING.replace("subprocess.Popen([", "subprocess.Popen(process_group=0, args=[")


class TestProcessRegistry:
    @pytest.mark.parametrize("script", [FORKING, FORKING_OWN_GROUP], ids=["same-group", "own-group"])
    def test_start_and_stop_ends_the_whole_session(self, tmp_path: Path, script: str) -> None:
        registry = ProcessRegistry(tmp_path)
        proc = registry.start("demo", [sys.executable, "-c", script], env={}, cwd=tmp_path)
        time.sleep(0.5)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the parent should have forked a child"
        assert registry.running("demo") == proc
        assert registry.stop("demo", timeout_s=5)
        assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        assert not registry.pid_file("demo").exists()

    def test_the_server_is_stopped_before_what_it_started(self, tmp_path: Path) -> None:
        # Triton must unload its models before their Python-backend stubs end; signalled together, the stubs
        # died first and Triton hung until SIGKILL. Here the server takes half a second to shut down.
        order = tmp_path / "order"
        child = f"import signal, time; signal.signal(signal.SIGTERM, lambda *_: (open({str(order)!r}, 'a').write('child\\n'), exit())); open({str(order)!r}, 'a').write('ready\\n'); time.sleep(60)"
        server = (
            "import signal, subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
            f"def stop(*_):\n    time.sleep(0.5); open({str(order)!r}, 'a').write('server\\n'); sys.exit()\n"
            "signal.signal(signal.SIGTERM, stop)\ntime.sleep(60)\n"
        )
        registry = ProcessRegistry(tmp_path)
        proc = registry.start("server", [sys.executable, "-c", server], env={}, cwd=tmp_path)
        _wait_for(lambda: order.exists(), "the child to handle SIGTERM")
        assert registry.stop("server", timeout_s=20)
        assert order.read_text().split() == ["ready", "server", "child"]
        assert proc.session_members() == []

    def test_what_a_dead_server_left_behind_is_stopped_even_if_it_ignores_sigterm(self, tmp_path: Path) -> None:
        # A stub Triton leaves when its exit timeout cuts the unload short ignores SIGTERM.
        ready = tmp_path / "ready"
        child = f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open({str(ready)!r}, 'w'); time.sleep(60)"
        server = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(1)"
        registry = ProcessRegistry(tmp_path)
        proc = registry.start("server", [sys.executable, "-c", server], env={}, cwd=tmp_path)
        _wait_for(lambda: ready.exists(), "the child to ignore SIGTERM")
        (left,) = psutil.Process(proc.pid).children()
        _wait_for(lambda: not proc.is_alive(), "the server to exit")  # and leave its child behind
        assert left.is_running()
        assert registry.stop("server", timeout_s=20)
        assert not left.is_running() or left.status() == psutil.STATUS_ZOMBIE
        assert not registry.pid_file("server").exists()

    def test_reused_pid_is_never_signalled(self, tmp_path: Path) -> None:
        registry = ProcessRegistry(tmp_path)
        registry.run_dir.mkdir(parents=True)
        # Our own pid, but with another start time: looks like a stale pid file whose pid was reused.
        me = psutil.Process()
        registry.pid_file("stale").write_text(
            json.dumps({"pid": me.pid, "create_time": me.create_time() - 1000})
        )
        assert registry.running("stale") is None
        assert registry.stop("stale") is False  # and we are still alive to assert it
        assert not registry.pid_file("stale").exists()

    def test_log_tail(self, tmp_path: Path) -> None:
        registry = ProcessRegistry(tmp_path)
        registry.start("echo", [sys.executable, "-c", "print('hello from the server')"], env={}, cwd=tmp_path)
        deadline = time.monotonic() + 10
        while "hello from the server" not in registry.tail("echo") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "hello from the server" in registry.tail("echo")
        assert registry.tail("never-started") == "(no log)"


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_port_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)
