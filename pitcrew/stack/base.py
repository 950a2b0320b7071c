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


def stack_secret(settings: Settings, name: str, nbytes: int = 32) -> str:
    """A secret generated once per stack home, so restarts keep tokens and sessions valid."""
    path = settings.home_dir / "secrets" / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(nbytes)
    path.write_text(value)
    path.chmod(0o600)
    return value


def webhook_token(settings: Settings) -> str:
    return settings.webhook_token.get_secret_value() or stack_secret(settings, "webhook_token")


def webhook_hmac_secret(settings: Settings) -> str:
    return settings.webhook_hmac_secret.get_secret_value() or stack_secret(settings, "webhook_hmac_secret")
