"""Start real servers for integration tests on free loopback ports, in a private state folder.

Every test session gets its own ports and home, so tests never touch a developer's running stack and
parallel runs do not collide.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from pitcrew.settings import Settings
from pitcrew.stack.runner import Stack, components_for

PORT_FIELDS = tuple(name for name in Settings.model_fields if name.endswith("_port"))


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def make_settings(home: Path, **overrides: object) -> Settings:
    """Settings for a private stack under ``home`` with free ports; ``overrides`` win."""
    ports = dict(zip(PORT_FIELDS, free_ports(len(PORT_FIELDS)), strict=True))
    values: dict[str, object] = {"home": home, "startup_timeout_s": 240.0, "scrape_interval_s": 1, **ports}
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_stack(
    settings: Settings, only: tuple[str, ...] | None = None, profile: str = "embedded"
) -> Iterator[Stack]:
    """Bring up the profile's real components (all, or those named in ``only``), yield the Stack, always
    bring it down."""
    components = [c for c in components_for(settings, profile) if only is None or c.name in only]
    stack = Stack(settings, components, profile=profile)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@contextmanager
def stack_with_env(settings: Settings, only: tuple[str, ...] | None = None) -> Iterator[Stack]:
    """:func:`running_stack` with ``settings`` also in this process's environment (what the CLI reads)."""
    import pytest

    from pitcrew.settings import get_settings

    with pytest.MonkeyPatch.context() as mp:
        for key, value in settings.as_env().items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        try:
            with running_stack(settings, only=only) as stack:
                yield stack
        finally:
            get_settings.cache_clear()


def port_open(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0
