"""``stack up | down | status``: start the real servers in order, wait until each is healthy, stop by pid file."""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pitcrew.settings import Settings
from pitcrew.stack.components import Component, Health, StackError, all_components
from pitcrew.stack.processes import ProcessRegistry, port_in_use

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    url: str
    running: bool
    health: Health


PROFILES = ("embedded", "distributed")

#: Started and answering before anything after them starts: Airflow's and MLflow's start-up migrate
#: their schemas in PostgreSQL, and Airflow's workers connect to Redis at once.
NEEDED_BY_THE_REST = frozenset({"postgres", "redis"})
#: Started only once everything before them answers: Prometheus would otherwise scrape servers still
#: booting (and fire its "down" alerts); a Celery worker would take tasks before the API server answers.
START_LAST = frozenset({"prometheus"})
START_LAST_PREFIXES = ("worker-",)  # the Celery workers, worker-<queue>
#: How long ``status`` keeps re-probing a running component whose probe failed before calling it unhealthy.
#: One probe is not a verdict: right after ``up`` Airflow starts the first scheduled runs (the nightly DAG's
#: latest cron point, pitcrew_watch), and their tasks keep its single API-server worker busy on SQLite for
#: seconds (a task's execution-API call was measured at 17.7 s under load), so a 3 s health probe times out
#: while everything is up. ``up`` polls until healthy; ``status`` must not turn one slow answer into red.
STATUS_GRACE_S = 30.0
STATUS_RETRY_S = 1.0


def components_for(settings: Settings, profile: str) -> list[Component]:
    if profile == "distributed":
        from pitcrew.stack.distributed import distributed_components

        return distributed_components(settings)
    if profile != "embedded":
        raise StackError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    return all_components(settings)


class Stack:
    """The local stack under one home. ``profile``: None means the one it was last brought up with."""

    def __init__(
        self, settings: Settings, components: list[Component] | None = None, profile: str | None = None
    ) -> None:
        self.settings = settings
        self.registry = ProcessRegistry(settings.home_dir)
        recorded = self.recorded_profile()
        if profile is not None and recorded not in (None, profile) and self._anything_running(recorded):
            raise StackError(
                f"the stack in {settings.home_dir} is up with the {recorded} profile; "
                f"run `pitcrew stack down` before bringing it up as {profile}"
            )
        self.profile = profile or recorded or "embedded"
        self.components = components if components is not None else components_for(settings, self.profile)

    def recorded_profile(self) -> str | None:
        path = self.settings.home_dir / "profile"
        return path.read_text().strip() if path.exists() else None

    def _anything_running(self, profile: str) -> bool:
        return any(self._running_processes(c) for c in components_for(self.settings, profile))

    # ---------------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Fail before starting anything when the machine cannot run the stack."""
        major, minor = sys.version_info[0], sys.version_info[1]
        if (major, minor) != (3, 11):
            raise StackError(
                f"python: pitcrew needs Python 3.11 (the Triton stub and pinned wheels), this is "
                f"{major}.{minor}; create the venv with python3.11"
            )
        for component in self.components:
            if self._running_processes(component):
                continue  # ours and already up: `up` is idempotent
            for port in component.ports:
                if port_in_use(self.settings.host, port):
                    raise StackError(
                        f"{component.name}: port {self.settings.host}:{port} is already in use by another "
                        f"program; stop it or choose another port with the PITCREW_*_PORT settings"
                    )
        # Resolve every command now so a missing binary fails before anything starts.
        for component in self.components:
            if not self._running_processes(component):
                component.processes()

    def up(self) -> list[ComponentStatus]:
        """Start what is not running, in order, overlapping start-ups where nothing depends on them.

        A component's processes start without waiting for the ones before it to answer, so MLflow and
        Triton boot while Airflow migrates its database. Two waits keep the order that matters: the
        databases (:data:`NEEDED_BY_THE_REST`) must answer before anything after them starts, and the
        components of :data:`START_LAST` start only once everything before them answers.
        """
        self.settings.home_dir.mkdir(parents=True, exist_ok=True)
        self.preflight()
        (self.settings.home_dir / "profile").write_text(self.profile)
        started: list[Component] = []
        booting: list[Component] = []
        try:
            for component in self.components:
                if self._all_running(component) and component.health().ok:
                    log.info("%s already running at %s", component.name, component.url)
                    continue
                if component.name in START_LAST or component.name.startswith(START_LAST_PREFIXES):
                    self._wait_all_healthy(booting)
                self._stop_component(component)  # half-running from an earlier crash: start clean
                log.info("starting %s", component.name)
                component.prepare()
                for proc in component.processes():
                    self.registry.start(proc.name, proc.argv, proc.env, proc.cwd, proc.user)
                started.append(component)
                booting.append(component)
                if component.name in NEEDED_BY_THE_REST:
                    self._wait_all_healthy(booting)
            self._wait_all_healthy(booting)
        except BaseException:
            # Nothing is left half-started: stop what this call started, newest first.
            for component in reversed(started):
                self._stop_component(component)
            raise
        return self.status()

    def _wait_all_healthy(self, booting: list[Component]) -> None:
        while booting:
            component = booting.pop(0)
            self._wait_healthy(component)
            log.info("%s healthy at %s", component.name, component.url)

    def down(self) -> list[str]:
        """Stop everything; return the names of the components that were running, newest first.

        Every process gets its SIGTERM at once and they shut down side by side (one at a time, Airflow's
        four processes alone took 16 s), in two waves: first everything but the databases, then the
        databases (:data:`NEEDED_BY_THE_REST`), which the others still write to while they shut down.
        """
        newest_first = list(reversed(self.components))
        waves = ([c for c in newest_first if c.name not in NEEDED_BY_THE_REST],
                 [c for c in newest_first if c.name in NEEDED_BY_THE_REST])
        stopped: set[str] = set()
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="stack-down") as pool:
            for wave in waves:
                jobs = {pool.submit(self.registry.stop, name): component.name
                        for component in wave for name in self._pid_names(component)}
                stopped.update(jobs[job] for job in jobs if job.result())
        return [c.name for c in newest_first if c.name in stopped]

    def status(self) -> list[ComponentStatus]:
        """Each component: running (its processes alive) and healthy (its probe answered, within a grace)."""
        statuses = []
        for component in self.components:
            running = self._all_running(component)
            health = self._settled_health(component) if running else Health(False, "not running")
            statuses.append(ComponentStatus(component.name, component.url, running, health))
        return statuses

    def _settled_health(self, component: Component) -> Health:
        """The component's health; a failed probe is retried for :data:`STATUS_GRACE_S` while its processes
        stay alive (a busy server answers late, a dead one stops being retried at once)."""
        deadline = time.monotonic() + STATUS_GRACE_S
        while True:
            health = component.health()
            if health.ok or time.monotonic() >= deadline or not self._all_running(component):
                return health
            log.info("%s: health probe failed (%s); probing again", component.name, health.detail)
            time.sleep(STATUS_RETRY_S)

    # ---------------------------------------------------------------------------------------------
    def _running_processes(self, component: Component) -> list[str]:
        return [n for n in self._pid_names(component) if self.registry.running(n)]

    def _pid_names(self, component: Component) -> list[str]:
        # Pid files are named after the component or "<component>-<process>".
        run_dir = self.registry.run_dir
        if not run_dir.exists():
            return []
        return sorted(
            p.stem
            for p in run_dir.glob("*.pid")
            if p.stem == component.name or p.stem.startswith(f"{component.name}-")
        )

    def _all_running(self, component: Component) -> bool:
        names = self._pid_names(component)
        return bool(names) and all(self.registry.running(n) for n in names)

    def _stop_component(self, component: Component) -> bool:
        stopped = False
        for name in self._pid_names(component):
            stopped = self.registry.stop(name) or stopped
        return stopped

    def _wait_healthy(self, component: Component) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        health = Health(False, "not checked")
        while time.monotonic() < deadline:
            for name in self._pid_names(component):
                if not self.registry.running(name):
                    raise StackError(
                        f"{component.name}: process {name} exited during start-up; last log lines "
                        f"({self.registry.log_file(name)}):\n{self.registry.tail(name)}"
                    )
            health = component.health()
            if health.ok:
                return
            time.sleep(1.0)
        tails = "\n".join(f"--- {n}:\n{self.registry.tail(n)}" for n in self._pid_names(component))
        raise StackError(
            f"{component.name}: not healthy after {self.settings.startup_timeout_s:.0f}s ({health.detail}); "
            f"last log lines:\n{tails}"
        )
