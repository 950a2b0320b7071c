"""The one dedup / cooldown / daily-cap policy, with its state in a small SQLite file.

The webhook (inside the Airflow API server, possibly several workers) and the poller (through the
webhook) share this file. Every decision runs in a ``BEGIN IMMEDIATE`` transaction, so concurrent
writers are serialised by SQLite's lock: 100 simultaneous posts of one alert reserve exactly one run.

A run is *reserved* before Airflow is called and *released* if the call fails, so a failed trigger
neither loses the alert (the sender retries) nor consumes the cooldown or the cap.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pitcrew.alerts.errors import TriggerUnavailable
from pitcrew.alerts.payloads import Alert
from pitcrew.alerts.routing import RoutedAlert
from pitcrew.sqlite_state import SqliteState

log = logging.getLogger(__name__)

#: The cap counts automatic runs in a rolling window rather than per calendar day, so a flapping alert
#: cannot spend one day's cap just before midnight and the next day's just after.
CAP_WINDOW_S = 86_400

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    dag_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'triggered'))
);
CREATE INDEX IF NOT EXISTS runs_by_fingerprint ON runs (dag_id, fingerprint, created_at);
CREATE INDEX IF NOT EXISTS runs_by_model ON runs (model, created_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,
    alertname TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT,
    decision TEXT NOT NULL,
    run_id TEXT
);
"""

#: ``GET /pitcrew/metrics`` reads these per-(source, model, decision) counters instead of grouping the
#: events table, which grows with every alert ever received: a scrape costs the same after a year. The
#: trigger counts each event in the transaction that inserts it, whoever inserts it (an API-server worker
#: still running older code included). The migration counts the events recorded before it, once: it runs
#: under the write lock, and the trigger's existence marks it done.
_COUNTS_TRIGGER = "events_count_decision"
_COUNTS_MIGRATION = (
    """CREATE TABLE IF NOT EXISTS decision_counts (
        source TEXT NOT NULL,
        model TEXT NOT NULL,
        decision TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (source, model, decision)
    ) WITHOUT ROWID""",
    "DELETE FROM decision_counts",
    "INSERT INTO decision_counts (source, model, decision, count)"
    " SELECT source, COALESCE(model, ''), decision, COUNT(*) FROM events GROUP BY 1, 2, 3",
    f"""CREATE TRIGGER {_COUNTS_TRIGGER} AFTER INSERT ON events BEGIN
        INSERT INTO decision_counts (source, model, decision, count)
        VALUES (NEW.source, COALESCE(NEW.model, ''), NEW.decision, 1)
        ON CONFLICT (source, model, decision) DO UPDATE SET count = count + 1;
    END""",
)


class Decision(StrEnum):
    TRIGGERED = "triggered"
    COOLDOWN = "cooldown"  # same fingerprint started a run within its cooldown
    CAPPED = "capped"  # the model reached its automatic runs per day
    ATTACHED = "attached"  # the model's incident already has a run (in flight, or within the cooldown)
    RESOLVED = "resolved"  # recorded, never triggers
    UNROUTED = "unrouted"  # no route, or a model the models file does not declare
    REJECTED = "rejected"  # Airflow refused the run (unknown DAG)


@dataclass(frozen=True)
class Limits:
    cooldown_s: int
    max_runs_per_day: int
    #: Any alert about the model (another name, other labels) attaches to a run in flight or started within
    #: the cooldown: one incident, one run, one approval (the models file's ``one_run_per_incident``).
    one_run_per_incident: bool = False


@dataclass(frozen=True)
class Reservation:
    routed: RoutedAlert
    run_id: str


def make_run_id(routed: RoutedAlert, now: float) -> str:
    """A readable, unique run id: ``alert__<model>__<fingerprint>__<UTC time>`` (Airflow's allowed chars)."""
    fingerprint = re.sub(r"[^A-Za-z0-9_-]", "", routed.alert.fingerprint)[:64]
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"alert__{routed.model}__{fingerprint}__{stamp}"


class AlertPolicy:
    """Decides, records and counts; see the module docstring for the concurrency contract."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self.state = SqliteState(
            path, _SCHEMA, lambda message: TriggerUnavailable(f"alert state: {message}"), busy_timeout_s=busy_timeout_s
        )
        self._connect = self.state.connect
        self._transaction = self.state.transaction
        self._migrate_counts()

    def _migrate_counts(self) -> None:
        def done(db: sqlite3.Connection) -> bool:
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?"
            return db.execute(sql, (_COUNTS_TRIGGER,)).fetchone() is not None

        conn = self._connect()
        try:
            if done(conn):  # the usual case: no write lock taken
                return
        finally:
            conn.close()
        with self._transaction() as db:
            if not done(db):  # another process may have migrated while this one waited for the lock
                for statement in _COUNTS_MIGRATION:
                    db.execute(statement)

    # ---------------------------------------------------------------------------------------------
    def reserve(
        self, routed: RoutedAlert, limits: Limits, *, open_run: str | None = None, now: float | None = None
    ) -> Reservation | Decision:
        """Reserve a run for a firing alert, or say why not (cooldown, attached, cap); records the decision.

        :param open_run: a run of the alert's DAG still in flight (queued or running), if any.
        """
        now = time.time() if now is None else now
        alert = routed.alert
        with self._transaction() as db:
            recent = db.execute(
                "SELECT run_id FROM runs WHERE dag_id = ? AND fingerprint = ? AND created_at > ? LIMIT 1",
                (routed.dag_id, alert.fingerprint, now - limits.cooldown_s),
            ).fetchone()
            if recent is not None:
                self._event(db, alert, routed.model, Decision.COOLDOWN, recent[0], now)
                return Decision.COOLDOWN
            if limits.one_run_per_incident:
                incident = open_run or (db.execute(
                    "SELECT run_id FROM runs WHERE model = ? AND created_at > ? ORDER BY created_at DESC LIMIT 1",
                    (routed.model, now - limits.cooldown_s),
                ).fetchone() or [None])[0]  # fmt: skip
                if incident is not None:
                    self._event(db, alert, routed.model, Decision.ATTACHED, incident, now)
                    log.info("alert %s (%s) attached to %s's run %s", alert.name, alert.fingerprint,
                             routed.model, incident)  # fmt: skip
                    return Decision.ATTACHED
            (today,) = db.execute(
                "SELECT COUNT(*) FROM runs WHERE model = ? AND created_at > ?", (routed.model, now - CAP_WINDOW_S)
            ).fetchone()
            if today >= limits.max_runs_per_day:
                self._event(db, alert, routed.model, Decision.CAPPED, None, now)
                log.warning(
                    "refused alert %s (%s) for model %s: %d automatic runs in 24h reached the cap of %d",
                    alert.name, alert.fingerprint, routed.model, today, limits.max_runs_per_day,
                )  # fmt: skip
                return Decision.CAPPED
            run_id = make_run_id(routed, now)
            db.execute(
                "INSERT INTO runs (model, dag_id, fingerprint, run_id, created_at, state) VALUES (?,?,?,?,?,?)",
                (routed.model, routed.dag_id, alert.fingerprint, run_id, now, "reserved"),
            )
        return Reservation(routed, run_id)

    def confirm(self, reservation: Reservation, *, now: float | None = None) -> None:
        """The run exists in Airflow."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET state = 'triggered' WHERE run_id = ?", (reservation.run_id,))
            self._event(
                db, reservation.routed.alert, reservation.routed.model, Decision.TRIGGERED, reservation.run_id,
                time.time() if now is None else now,
            )  # fmt: skip

    def release(self, reservation: Reservation, decision: Decision | None = None) -> None:
        """Airflow did not create the run: free the cooldown and the cap; record a final refusal if given."""
        with self._transaction() as db:
            db.execute("DELETE FROM runs WHERE run_id = ? AND state = 'reserved'", (reservation.run_id,))
            if decision is not None:
                self._event(db, reservation.routed.alert, reservation.routed.model, decision, None, time.time())

    def record(self, alert: Alert, decision: Decision, model: str | None = None) -> None:
        """Record an alert that needs no reservation (resolved, unrouted)."""
        with self._transaction() as db:
            self._event(db, alert, model, decision, None, time.time())

    @staticmethod
    def _event(
        db: sqlite3.Connection, alert: Alert, model: str | None, decision: Decision, run_id: str | None, now: float
    ) -> None:
        db.execute(
            "INSERT INTO events (received_at, source, alertname, fingerprint, status, model, decision, run_id)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (now, alert.source, alert.name, alert.fingerprint, alert.status, model, decision.value, run_id),
        )

    # ---------------------------------------------------------------------------------------------
    def decision_counts(self) -> dict[tuple[str, str, str], int]:
        """``(source, model, decision) -> count`` over all recorded alerts, for the metrics endpoint.

        Read from the counters the insert trigger keeps (one row per combination), not from the events.
        """
        conn = self._connect()
        try:
            rows = conn.execute("SELECT source, model, decision, count FROM decision_counts").fetchall()
        finally:
            conn.close()
        return {(s, m, d): n for s, m, d, n in rows}

    def runs(self, model: str | None = None) -> list[tuple[str, str, str]]:
        """``(run_id, fingerprint, state)`` of reserved/triggered runs, oldest first."""
        conn = self._connect()
        try:
            sql = "SELECT run_id, fingerprint, state FROM runs"
            args: tuple[str, ...] = ()
            if model is not None:
                sql += " WHERE model = ?"
                args = (model,)
            return conn.execute(sql + " ORDER BY created_at", args).fetchall()
        finally:
            conn.close()
