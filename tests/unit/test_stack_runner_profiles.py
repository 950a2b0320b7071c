"""Stack profiles: recorded on `up`, read back by a bare Stack, never switched under running processes.

The components are stand-ins (a Python process sleeping) named like the real ones, so the runner's
pid-file bookkeeping is exercised without starting any server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitcrew.settings import Settings
from pitcrew.stack.base import Component, Health, Process, StackError
from pitcrew.stack.runner import PROFILES, Stack, components_for

SLEEP = [sys.executable, "-c", "import time; time.sleep(30)"]


def sleeper(name: str, cwd: Path) -> Component:
    return Component(
        name=name,
        url=f"fake://{name}",
        ports=[],
        processes=lambda: [Process(name, SLEEP, {}, cwd)],
        health=lambda: Health(True, "ok"),
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", startup_timeout_s=20)


@pytest.fixture
def up_distributed(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    """A stack brought up as `distributed` whose only process is named like its Redis."""
    stack = Stack(settings, [sleeper("redis", tmp_path)], profile="distributed")
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


class TestProfiles:
    def test_up_records_the_profile(self, settings: Settings, up_distributed: Stack) -> None:
        assert (settings.home_dir / "profile").read_text() == "distributed"
        assert up_distributed.recorded_profile() == "distributed"
        assert [s.running for s in up_distributed.status()] == [True]

    def test_bare_stack_uses_the_recorded_profile(self, settings: Settings, up_distributed: Stack) -> None:
        stack = Stack(settings)
        assert stack.profile == "distributed"
        names = [c.name for c in stack.components]
        assert names[:2] == ["postgres", "redis"]
        assert {"worker-default", "worker-gpu"} <= set(names)

    def test_same_profile_is_accepted_while_running(self, settings: Settings, up_distributed: Stack) -> None:
        assert Stack(settings, profile="distributed").profile == "distributed"

    def test_other_profile_is_refused_while_running(self, settings: Settings, up_distributed: Stack) -> None:
        with pytest.raises(
            StackError, match=r"up with the distributed profile; run `pitcrew stack down` before"
        ):
            Stack(settings, profile="embedded")
        # The refusal leaves the running stack and its record alone.
        assert (settings.home_dir / "profile").read_text() == "distributed"
        assert [s.running for s in up_distributed.status()] == [True]

    def test_bare_stack_down_stops_the_recorded_profiles_processes(
        self, settings: Settings, up_distributed: Stack
    ) -> None:
        assert Stack(settings).down() == ["redis"]
        assert not up_distributed.registry.pid_file("redis").exists()
        # Nothing runs any more: the other profile may now be chosen.
        assert Stack(settings, profile="embedded").profile == "embedded"

    def test_other_profile_is_accepted_once_down(self, settings: Settings, tmp_path: Path) -> None:
        first = Stack(settings, [sleeper("worker-gpu", tmp_path)], profile="distributed")
        try:
            first.up()
        finally:
            first.down()
        stack = Stack(settings, [sleeper("mlflow", tmp_path)], profile="embedded")
        try:
            stack.up()
            assert (settings.home_dir / "profile").read_text() == "embedded"
            assert Stack(settings).profile == "embedded"
        finally:
            stack.down()

    def test_default_profile_is_embedded(self, settings: Settings) -> None:
        stack = Stack(settings)
        assert stack.recorded_profile() is None
        assert stack.profile == "embedded"
        assert [c.name for c in stack.components] == [c.name for c in components_for(settings, "embedded")]
        assert "postgres" not in {c.name for c in stack.components}

    def test_unknown_profile_lists_the_profiles(self, settings: Settings) -> None:
        assert PROFILES == ("embedded", "distributed")
        with pytest.raises(StackError, match=r"unknown profile 'nope'; profiles: embedded, distributed"):
            components_for(settings, "nope")
