"""The building blocks of the local stack: a component, its processes and health, and its secrets.

Split from :mod:`pitcrew.stack.components` (the servers) and :mod:`pitcrew.stack.airflow_component` (Airflow's
four processes and their environment), which both build on these.
"""

from __future__ import annotations

import os
import secrets
import sys
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


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, from the first byte (created 0600, never chmod'ed
    after being readable): secret files, configs that hold a password."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # O_CREAT's mode applies to new files only


def stack_secret(settings: Settings, name: str, nbytes: int = 32, configured: str = "") -> str:
    """A secret kept in the secrets folder (mode 0600), so restarts keep tokens and sessions valid.

    Generated once; a ``configured`` value (from the settings) replaces the file's, so every process that
    reads the file (Airflow's, which never get the secret in their environment) agrees with it.
    """
    path = settings.secrets_path / name
    if path.exists() and (not configured or path.read_text().strip() == configured):
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = configured or secrets.token_urlsafe(nbytes)
    write_private(path, value)
    return value


def webhook_token(settings: Settings) -> str:
    return stack_secret(settings, "webhook_token", configured=settings.webhook_token.get_secret_value())


def webhook_hmac_secret(settings: Settings) -> str:
    return stack_secret(
        settings, "webhook_hmac_secret", configured=settings.webhook_hmac_secret.get_secret_value()
    )
