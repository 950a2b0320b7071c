"""``stack up`` overlaps start-ups, but never before the databases answer, and Prometheus starts last.

Stand-in components (a sleeping Python process each) whose health turns true a moment after they
start; each ``prepare`` records which components answered at that moment.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from pitcrew.settings import Settings
from pitcrew.stack.base import Component, Health, Process, StackError
from pitcrew.stack.runner import Stack

SLEEP = [sys.executable, "-c", "import time; time.sleep(30)"]


class Fleet:
    def __init__(self, cwd: Path, boot_s: float = 0.5) -> None:
        self.cwd, self.boot_s = cwd, boot_s
        self.started_at: dict[str, float] = {}
        self.healthy_at_prepare: dict[str, set[str]] = {}
        self.gate: dict[str, str] = {}  # component -> the component that must have started for it to answer

    def healthy(self, name: str) -> bool:
        started = self.started_at.get(name)
        if started is None or time.monotonic() - started < self.boot_s:
            return False
        needed = self.gate.get(name)
        return needed is None or needed in self.started_at

    def component(self, name: str) -> Component:
        def prepare() -> None:  # runs right before the component's processes start
            self.healthy_at_prepare[name] = {n for n in self.started_at if self.healthy(n)}
            self.started_at[name] = time.monotonic()

        def processes() -> list[Process]:  # also called by the preflight, which starts nothing
            return [Process(name, SLEEP, {}, self.cwd)]

        return Component(name=name, url=f"fake://{name}", ports=[], processes=processes,
                         health=lambda: Health(self.healthy(name), "booting"), prepare=prepare)  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", startup_timeout_s=5)


def _up(settings: Settings, fleet: Fleet, names: list[str]) -> Stack:
    stack = Stack(settings, [fleet.component(n) for n in names])
    try:
        stack.up()
    finally:
        stack.down()
    return stack


def test_a_component_starts_while_the_one_before_still_boots(settings: Settings, tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.gate["mlflow"] = "airflow"  # answers only once Airflow has started: a strict order would time out
    _up(settings, fleet, ["mlflow", "airflow"])
    assert "mlflow" not in fleet.healthy_at_prepare["airflow"]


def test_the_databases_answer_before_anything_after_them_starts(settings: Settings, tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    _up(settings, fleet, ["postgres", "redis", "mlflow", "airflow"])
    assert fleet.healthy_at_prepare["redis"] == {"postgres"}
    assert {"postgres", "redis"} <= fleet.healthy_at_prepare["mlflow"]


def test_prometheus_and_workers_start_once_everything_before_answers(settings: Settings, tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    _up(settings, fleet, ["mlflow", "airflow", "worker-default", "alertmanager", "prometheus"])
    assert fleet.healthy_at_prepare["worker-default"] == {"mlflow", "airflow"}
    assert fleet.healthy_at_prepare["prometheus"] == {"mlflow", "airflow", "worker-default", "alertmanager"}


def test_a_component_that_never_answers_stops_everything_started(settings: Settings, tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.gate["mlflow"] = "nothing"
    stack = Stack(settings, [fleet.component(n) for n in ("mlflow", "airflow")])
    with pytest.raises(StackError, match="mlflow: not healthy"):
        stack.up()
    assert not any(stack.registry.running(n) for n in ("mlflow", "airflow"))


class TestStatusAfterUp:
    """``status`` (also what ``up`` returns) retries a failed probe of a running component for a grace:
    right after ``up`` Airflow's API server can be busy for seconds with the first scheduled runs."""

    @staticmethod
    def _scripted(cwd: Path, plan: list[bool]) -> tuple[Component, list[bool]]:
        """A running component whose probes answer ``plan`` in order, then healthy; the answers it gave."""
        given: list[bool] = []

        def health() -> Health:
            given.append(plan.pop(0) if plan else True)
            return Health(given[-1], "ok" if given[-1] else "ReadTimeout")

        return Component(name="airflow", url="fake://airflow", ports=[],
                         processes=lambda: [Process("airflow", SLEEP, {}, cwd)], health=health), given  # fmt: skip

    def test_a_probe_that_fails_then_answers_is_healthy(
        self, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("pitcrew.stack.runner.STATUS_RETRY_S", 0.01)
        plan: list[bool] = []
        component, given = self._scripted(tmp_path, plan)
        stack = Stack(settings, [component])
        try:
            assert [s.health.ok for s in stack.up()] == [True]
            plan[:], given[:] = [False, False], []  # the next two probes time out (a busy API server)
            (status,) = stack.status()
            assert status.running and status.health.ok, status
            assert given == [False, False, True]
        finally:
            stack.down()

    def test_a_probe_that_keeps_failing_is_unhealthy_after_the_grace(
        self, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("pitcrew.stack.runner.STATUS_RETRY_S", 0.01)
        monkeypatch.setattr("pitcrew.stack.runner.STATUS_GRACE_S", 0.2)
        plan: list[bool] = []
        component, given = self._scripted(tmp_path, plan)
        stack = Stack(settings, [component])
        try:
            stack.up()
            plan[:] = [False] * 10_000
            started = time.monotonic()
            (status,) = stack.status()
            assert status.running and not status.health.ok and status.health.detail == "ReadTimeout"
            assert 0.2 <= time.monotonic() - started < 5 and len(given) > 2
        finally:
            stack.down()


def test_down_stops_side_by_side_and_the_databases_last(settings: Settings, tmp_path: Path) -> None:
    # Each process notes when SIGTERM reached it and when it left, taking 0.5 s to shut down
    journal = tmp_path / "journal"
    script = ("import signal, sys, time\n"
              "def bye(*_):\n"
              "    open(sys.argv[2], 'a').write(f'term {sys.argv[1]}\\n'); time.sleep(0.5)\n"
              "    open(sys.argv[2], 'a').write(f'exit {sys.argv[1]}\\n'); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, bye)\n"
              "open(sys.argv[2], 'a').write(f'up {sys.argv[1]}\\n')\n"
              "time.sleep(60)\n")  # fmt: skip

    def component(name: str) -> Component:
        return Component(name=name, url=f"fake://{name}", ports=[], health=lambda: Health(True, "ok"),
                         processes=lambda: [Process(name, [sys.executable, "-c", script, name, str(journal)], {},
                                                    tmp_path)])  # fmt: skip

    names = ["postgres", "mlflow", "airflow", "triton"]
    stack = Stack(settings, [component(n) for n in names])
    try:
        stack.up()
        deadline = time.monotonic() + 10
        while (not journal.exists() or journal.read_text().count("up ") < len(names)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the SIGTERM handlers are in place only once each process wrote "up"
        assert stack.down() == ["triton", "airflow", "mlflow", "postgres"]
    finally:
        stack.down()  # nothing left running if an assertion above failed
    events = [line.split() for line in journal.read_text().splitlines() if not line.startswith("up ")]
    order = [f"{kind} {name}" for kind, name in events]
    others = ["mlflow", "airflow", "triton"]
    first_exit = min(order.index(f"exit {n}") for n in others)
    assert all(order.index(f"term {n}") < first_exit for n in others), order  # all told before any left
    assert order.index("term postgres") > max(order.index(f"exit {n}") for n in others), order
    assert not any(stack.registry.running(n) for n in names)
