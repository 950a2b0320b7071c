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

#: How long what a server leaves in its session, once the server itself is gone, gets to exit on SIGTERM.
LEFTOVER_GRACE_S = 2.0


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

    def session_members(self) -> list[int]:
        """The live processes of this server's session, the server included; none if its pid was reused.

        Members can outlive the server; Linux does not reuse a pid that is still the id of a living
        session, so while they live, a process under that pid is the server or a zombie of it.
        """
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) >= 1.0:
                return []  # another program's pid now, and its session is not ours
        except psutil.NoSuchProcess:
            pass
        return _session_members(self.pid)


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
        """Stop the session started under ``name``; return True if something was stopped.

        The server itself gets SIGTERM first and shuts its helpers down in its own order; what it leaves
        behind in its session gets SIGTERM after it, and SIGKILL after :data:`LEFTOVER_GRACE_S`. Signalled
        side by side, Triton's Python-backend stubs died before Triton could unload their models, and
        Triton hung until SIGKILL; a stub Triton leaves (its exit timeout cut the unload short) ignores
        SIGTERM. Both cost 30 s on every ``down`` with a model loaded; now about 8 s.
        """
        proc = self.read(name)
        stopped = False
        if proc is not None and proc.session_members():
            deadline = time.monotonic() + timeout_s
            if proc.is_alive():
                _signal(proc.pid, signal.SIGTERM)
            while time.monotonic() < deadline and proc.is_alive():
                time.sleep(0.1)
            # What the server left: e.g. an Airflow task supervisor in a process group of its own.
            _signal_session(proc.pid, signal.SIGTERM)
            leftovers_deadline = min(deadline, time.monotonic() + LEFTOVER_GRACE_S)
            while time.monotonic() < leftovers_deadline and proc.session_members():
                time.sleep(0.1)
            if proc.session_members():
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
        _signal(pid, sig)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
