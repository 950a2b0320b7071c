"""The building blocks of the local stack: a component, its processes and health, and its secrets.

Split from :mod:`pitcrew.stack.components` (the servers) and :mod:`pitcrew.stack.airflow_component` (Airflow's
four processes and their environment), which both build on these.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pitcrew.settings import Settings


class StackError(RuntimeError):
    """A component cannot be prepared, started or reached; the message names it and the fix."""


@dataclass(frozen=True)
class Process:
    """One OS process of a component (Airflow has four)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    #: Run as this OS user (PostgreSQL refuses to run as root); None: the current user.
    user: str | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


@dataclass
class Component:
    name: str
    url: str
    ports: list[int]
    processes: Callable[[], list[Process]]
    health: Callable[[], Health]
    prepare: Callable[[], None] = field(default=lambda: None)


def venv_bin() -> Path:
    """The folder of the running interpreter's scripts (``airflow``, ``mlflow``)."""
    return Path(sys.executable).parent


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    # Servers spawn their own sub-commands (`airflow ...`, the Python stub): the venv must come first.
    env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def http_health(url: str, expect: Callable[[httpx.Response], bool] | None = None) -> Health:
    try:
        response = httpx.get(url, timeout=3.0)
    except httpx.HTTPError as exc:
        return Health(False, f"{type(exc).__name__}")
    if response.status_code != 200:
        return Health(False, f"HTTP {response.status_code}")
    if expect is not None and not expect(response):
        return Health(False, f"unexpected answer: {response.text[:120]}")
    return Health(True, "ok")


def _private_temp(folder: Path, text: str) -> Path:
    """``text`` in a new file of ``folder`` that only its owner can read from the first byte (mkstemp
    creates it 0600 with O_EXCL, whatever the umask), flushed to disk: ready to be renamed or linked."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only from the first byte: secret files, configs
    that hold a password. Written to a 0600 temporary file beside it, then renamed over it, so a reader
    sees the old content or the new, never a partial file or a moment of looser mode."""
    temp = _private_temp(path.parent, text)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def create_private(path: Path, text: str) -> str:
    """Create ``path`` holding ``text`` (0600 from the first byte) unless it exists; return what it holds.

    ``os.link`` of a complete temporary file fails if the name exists, so of processes creating the same
    file at once exactly one wins, and every one of them returns the winner's content.
    """
    temp = _private_temp(path.parent, text)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    return path.read_text()


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner may enter (0700), created if missing and closed if open."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # mkdir's mode is masked by the umask and ignored for an existing folder
    return path


def stack_secret(settings: Settings, name: str, nbytes: int = 32, configured: str = "") -> str:
    """A secret kept in the secrets folder (mode 0600), so restarts keep tokens and sessions valid.

    Generated once, race-free: processes generating it at once all get the first one written
    (:func:`create_private`). A ``configured`` value (from the settings) replaces the file's, so every
    process that reads the file (Airflow's, which never get the secret in their environment) agrees with it.
    """
    path = settings.secrets_path / name
    if configured:
        if not (path.exists() and path.read_text().strip() == configured):
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(path, configured)
        return configured
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return create_private(path, secrets.token_urlsafe(nbytes)).strip()


def webhook_token(settings: Settings) -> str:
    """Alertmanager's bearer token at the alert webhook (and the pitcrew_watch poller's)."""
    return stack_secret(settings, "webhook_token", configured=settings.webhook_token.get_secret_value())


def grafana_token(settings: Settings) -> str:
    """Grafana's bearer token at the alert webhook: a separate credential from Alertmanager's."""
    return stack_secret(settings, "grafana_token", configured=settings.grafana_token.get_secret_value())


def webhook_hmac_secret(settings: Settings) -> str:
    return stack_secret(
        settings, "webhook_hmac_secret", configured=settings.webhook_hmac_secret.get_secret_value()
    )
