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
