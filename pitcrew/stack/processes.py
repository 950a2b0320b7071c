"""Start and stop background servers by pid file, never by process name.

Each server runs in its own session (``start_new_session``) so that stopping it also ends every process of
that session: the children it spawned, even those in process groups of their own (Airflow forks workers
and task supervisors; Triton forks Python-backend stubs). A pid file also records the process start time, so a pid reused by an unrelated process is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class ManagedProcess:
    """A server process the stack started, as recorded in its pid file."""

    name: str
    pid: int
    create_time: float

    def is_alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            # A pid reused by another program has a different start time.
            return abs(proc.create_time() - self.create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


class ProcessRegistry:
    """Pid files under ``<home>/run`` and logs under ``<home>/logs``."""

    def __init__(self, home: Path) -> None:
        self.run_dir = home / "run"
        self.log_dir = home / "logs"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def read(self, name: str) -> ManagedProcess | None:
        try:
            data = json.loads(self.pid_file(name).read_text())
            return ManagedProcess(name=name, pid=int(data["pid"]), create_time=float(data["create_time"]))
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def running(self, name: str) -> ManagedProcess | None:
        proc = self.read(name)
        return proc if proc is not None and proc.is_alive() else None

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path, user: str | None = None
    ) -> ManagedProcess:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file(name).open("ab")
        log.write(f"\n==== pitcrew starting {name}: {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
        )
        log.close()
        proc = ManagedProcess(name=name, pid=popen.pid, create_time=psutil.Process(popen.pid).create_time())
        self.pid_file(name).write_text(
            json.dumps({"pid": proc.pid, "create_time": proc.create_time, "argv": argv})
        )
        return proc

    def stop(self, name: str, timeout_s: float = 30.0) -> bool:
        """Stop the process group started under ``name``; return True if something was stopped."""
        proc = self.read(name)
        stopped = False
        if proc is not None and proc.is_alive():
            _signal_session(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and _session_members(proc.pid):
                time.sleep(0.2)
            if _session_members(proc.pid):
                _signal_session(proc.pid, signal.SIGKILL)
                time.sleep(0.5)
            stopped = True
        self.pid_file(name).unlink(missing_ok=True)
        return stopped

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _session_members(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (the server started with ``start_new_session``).

    The session, not the process group: Airflow puts each task's supervisor in a process group of its own
    (``setpgid``), so signalling only the server's group left a LocalExecutor worker running after ``down``.
    """
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return members


def _signal_session(sid: int, sig: signal.Signals) -> None:
    for pid in _session_members(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
