from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitcrew.alerts.errors import TriggerUnavailable
from pitcrew.alerts.payloads import Alert
from pitcrew.alerts.policy import CAP_WINDOW_S, AlertPolicy, Decision, Limits, Reservation
from pitcrew.alerts.routing import RoutedAlert

LIMITS = Limits(cooldown_s=600, max_runs_per_day=3)


def _routed(fingerprint: str = "fp1", model: str = "textclf") -> RoutedAlert:
    alert = Alert(
        name="TritonInferenceFailures",
        status="firing",
        labels={"alertname": "TritonInferenceFailures", "model": model},
        fingerprint=fingerprint,
        starts_at=datetime(2026, 11, 22, tzinfo=UTC),
        source="alertmanager",
    )
    return RoutedAlert(alert, model, f"pitcrew_maintenance_{model}", {})


def _reserve_in_process(args: tuple[str, str]) -> bool:
    path, fingerprint = args
    result = AlertPolicy(Path(path)).reserve(_routed(fingerprint), LIMITS)
    return isinstance(result, Reservation)


class TestAlertPolicy:
    def test_first_alert_reserves_a_run(self, tmp_path: Path) -> None:
        policy = AlertPolicy(tmp_path / "state.db")
        reserved = policy.reserve(_routed(), LIMITS, now=1000.0)
        assert isinstance(reserved, Reservation)
        assert reserved.run_id.startswith("alert__textclf__fp1__")
        policy.confirm(reserved)
        assert policy.runs() == [(reserved.run_id, "fp1", "triggered")]
        assert policy.decision_counts() == {("alertmanager", "textclf", "triggered"): 1}

    def test_same_fingerprint_within_cooldown_is_refused(self, tmp_path: Path) -> None:
        policy = AlertPolicy(tmp_path / "state.db")
        assert isinstance(policy.reserve(_routed(), LIMITS, now=1000.0), Reservation)
        assert policy.reserve(_routed(), LIMITS, now=1000.0 + LIMITS.cooldown_s - 1) is Decision.COOLDOWN
        assert isinstance(policy.reserve(_routed(), LIMITS, now=1000.0 + LIMITS.cooldown_s + 1), Reservation)

    def test_one_incident_one_run_other_alerts_of_the_model_attach(self, tmp_path: Path) -> None:
        limits = Limits(cooldown_s=600, max_runs_per_day=3, one_run_per_incident=True)
        policy = AlertPolicy(tmp_path / "state.db")
        first = policy.reserve(_routed("fp1"), limits, now=1000.0)
        assert isinstance(first, Reservation)
        policy.confirm(first)
        # Another alert (say the drift score the run itself raised) within the cooldown: no second run.
        assert policy.reserve(_routed("drift"), limits, now=1038.0) is Decision.ATTACHED
        # Another model is another incident.
        assert isinstance(policy.reserve(_routed("drift", model="other"), limits, now=1038.0), Reservation)
        # Past the cooldown, a run still in flight holds the incident; once it ended, a new one starts.
        assert policy.reserve(_routed("late"), limits, open_run="run-in-flight", now=5000.0) is Decision.ATTACHED
        assert isinstance(policy.reserve(_routed("late"), limits, now=5000.0), Reservation)
        assert policy.decision_counts()[("alertmanager", "textclf", "attached")] == 2
        assert len(policy.runs("textclf")) == 2

    def test_without_one_run_per_incident_only_the_same_alert_is_held_back(self, tmp_path: Path) -> None:
        policy = AlertPolicy(tmp_path / "state.db")
        assert isinstance(policy.reserve(_routed("fp1"), LIMITS, now=1000.0), Reservation)
        assert isinstance(policy.reserve(_routed("fp2"), LIMITS, open_run="x", now=1001.0), Reservation)

    def test_daily_cap_per_model(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        policy = AlertPolicy(tmp_path / "state.db")
        for i in range(LIMITS.max_runs_per_day):
            assert isinstance(policy.reserve(_routed(f"fp{i}"), LIMITS, now=1000.0 + i), Reservation)
        assert policy.reserve(_routed("fresh"), LIMITS, now=1100.0) is Decision.CAPPED
        assert "reached the cap of 3" in caplog.text
        # Another model has its own cap; the window rolls.
        assert isinstance(policy.reserve(_routed("fresh", model="other"), LIMITS, now=1100.0), Reservation)
        assert isinstance(policy.reserve(_routed("fresh"), LIMITS, now=1000.0 + CAP_WINDOW_S + 1), Reservation)
        assert policy.decision_counts()[("alertmanager", "textclf", "capped")] == 1

    def test_release_frees_cooldown_and_cap(self, tmp_path: Path) -> None:
        policy = AlertPolicy(tmp_path / "state.db")
        reserved = policy.reserve(_routed(), LIMITS, now=1000.0)
        assert isinstance(reserved, Reservation)
        policy.release(reserved)
        assert policy.runs() == []
        assert isinstance(policy.reserve(_routed(), LIMITS, now=1001.0), Reservation)

    def test_zero_cap_refuses_everything(self, tmp_path: Path) -> None:
        policy = AlertPolicy(tmp_path / "state.db")
        assert policy.reserve(_routed(), Limits(0, 0)) is Decision.CAPPED

    def test_concurrent_processes_reserve_exactly_one(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        AlertPolicy(path)
        pool = multiprocessing.get_context("fork").Pool(8)
        try:
            results = pool.map(_reserve_in_process, [(str(path), "same")] * 64)
        finally:
            pool.close()  # not terminate() (what `with` does): SIGTERM to idle workers hung it at times
            pool.join()
        assert sum(results) == 1
        assert len(AlertPolicy(path).runs()) == 1

    def test_locked_state_is_unavailable_not_an_error(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        policy = AlertPolicy(path, busy_timeout_s=0.2)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(TriggerUnavailable, match="locked"):
                policy.reserve(_routed(), LIMITS)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert isinstance(policy.reserve(_routed(), LIMITS), Reservation)


# --- decision counts (GET /pitcrew/metrics) ------------------------------------------------------------
#: What the metrics endpoint has always meant: every recorded event, grouped.
_GROUPED_EVENTS = "SELECT source, COALESCE(model, ''), decision, COUNT(*) FROM events GROUP BY 1, 2, 3"


def _grouped(path: Path) -> dict[tuple[str, str, str], int]:
    conn = sqlite3.connect(path)
    try:
        return {(s, m, d): n for s, m, d, n in conn.execute(_GROUPED_EVENTS)}
    finally:
        conn.close()


def _insert_events(path: Path, rows: list[tuple[str, str | None, str]]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO events (received_at, source, alertname, fingerprint, status, model, decision)"
            " VALUES (0, ?, 'A', 'fp', 'firing', ?, ?)",
            rows,
        )
    conn.close()


def _old_state_file(path: Path, rows: list[tuple[str, str | None, str]]) -> None:
    """A state file as the version before the counters wrote it: the same tables (WAL), no counters."""
    from pitcrew.alerts import policy as policy_module

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(policy_module._SCHEMA)
    conn.close()
    _insert_events(path, rows)


_HISTORY = [("alertmanager", "textclf", "triggered")] * 3 + [("grafana", None, "unrouted")] * 2 + [
    ("pitcrew_watch", "textclf", "cooldown"), ("alertmanager", "other", "capped")]  # fmt: skip


def _migrate_in_process(path: str) -> dict:
    return AlertPolicy(Path(path)).decision_counts()


class TestDecisionCounts:
    def test_counts_are_the_grouped_events(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        policy = AlertPolicy(path)
        first = policy.reserve(_routed("a"), LIMITS, now=1000.0)
        assert isinstance(first, Reservation)
        policy.confirm(first)
        assert policy.reserve(_routed("a"), LIMITS, now=1001.0) is Decision.COOLDOWN
        second = policy.reserve(_routed("b"), LIMITS, now=1002.0)
        assert isinstance(second, Reservation)
        policy.release(second, Decision.REJECTED)
        policy.record(_routed("c").alert, Decision.UNROUTED)  # no model: counted under ""
        policy.record(_routed("c", model="other").alert, Decision.RESOLVED, "other")
        counts = policy.decision_counts()
        assert counts == _grouped(path)
        assert counts == {
            ("alertmanager", "textclf", "triggered"): 1, ("alertmanager", "textclf", "cooldown"): 1,
            ("alertmanager", "textclf", "rejected"): 1, ("alertmanager", "", "unrouted"): 1,
            ("alertmanager", "other", "resolved"): 1,
        }  # fmt: skip

    def test_a_scrape_never_reads_the_events_table(self, tmp_path: Path) -> None:
        policy = AlertPolicy(tmp_path / "state.db")
        policy.record(_routed().alert, Decision.UNROUTED)
        statements: list[str] = []
        real_connect = policy._connect

        def traced() -> sqlite3.Connection:
            conn = real_connect()
            conn.set_trace_callback(statements.append)
            return conn

        policy._connect = traced  # type: ignore[method-assign]
        policy.decision_counts()
        assert statements
        conn = real_connect()
        try:
            for sql in statements:
                plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
                assert "events" not in plan, f"{sql!r} reads the events table: {plan}"
        finally:
            conn.close()

    def test_a_scrape_costs_the_same_after_a_long_history(self, tmp_path: Path) -> None:
        # SQLite virtual-machine steps of one scrape, counted with a progress handler: with 20 events and
        # with 20,000 (same combinations), the scrape does the same work.
        path = tmp_path / "state.db"
        policy = AlertPolicy(path)

        def scrape_steps() -> int:
            steps = [0]
            real_connect = policy.state.connect

            def counted() -> sqlite3.Connection:
                conn = real_connect()
                conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 1)
                return conn

            policy._connect = counted  # type: ignore[method-assign]
            policy.decision_counts()
            return steps[0]

        _insert_events(path, _HISTORY * 3)
        short = scrape_steps()
        _insert_events(path, _HISTORY * 3000)
        assert scrape_steps() == short
        assert policy.decision_counts() == _grouped(path)

    def test_an_existing_state_file_is_counted_once(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        _old_state_file(path, _HISTORY)
        expected = _grouped(path)
        assert AlertPolicy(path).decision_counts() == expected
        assert AlertPolicy(path).decision_counts() == expected  # a second start does not count again
        AlertPolicy(path).record(_routed().alert, Decision.UNROUTED)
        assert AlertPolicy(path).decision_counts() == _grouped(path)

    def test_processes_starting_at_once_count_the_history_once(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        _old_state_file(path, _HISTORY * 50)
        pool = multiprocessing.get_context("fork").Pool(4)
        try:
            results = pool.map(_migrate_in_process, [str(path)] * 8)
        finally:
            pool.close()  # not terminate() (what `with` does): SIGTERM to idle workers hung it at times
            pool.join()
        assert all(r == _grouped(path) for r in results)
