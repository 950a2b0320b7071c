"""The label index: one row per (model, request id) in SQLite, with the counters the metrics export.

The feedback dataset (Parquet, possibly in an object store) is what training reads; this index is what
makes ingestion idempotent (a repeated label is a duplicate, a changed one a relabel) and what the
accuracy gauge is computed from without reading the inference log at every scrape. Every batch runs in
one ``BEGIN IMMEDIATE`` transaction, which also holds while the batch's Parquet file is written: if that
write fails, the transaction rolls back and nothing of the batch is recorded anywhere.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pitcrew.sqlite_state import SqliteState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    label TEXT NOT NULL,
    version TEXT NOT NULL,
    predicted TEXT NOT NULL,
    request_ts REAL NOT NULL,
    labelled_at REAL,
    received_at REAL NOT NULL,
    source TEXT,
    relabels INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, request_id)
);
CREATE INDEX IF NOT EXISTS labels_by_request_time ON labels (model, request_ts);
CREATE TABLE IF NOT EXISTS counts (
    model TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (model, name, key)
);
"""

#: Upper bounds (seconds) of the request-to-label lag histogram: a minute to a month.
LAG_BUCKETS = (60.0, 600.0, 3600.0, 6 * 3600.0, 86_400.0, 3 * 86_400.0, 7 * 86_400.0, 30 * 86_400.0)


class IndexBusy(RuntimeError):
    """The index stayed locked by another writer; the caller should retry (HTTP 503)."""


@dataclass(frozen=True)
class Joined:
    """A valid label joined with its logged request."""

    request_id: str
    label: str
    version: str
    predicted: str
    request_ts: float
    labelled_at: float | None
    source: str | None


@dataclass(frozen=True)
class Applied:
    new: list[Joined]
    relabelled: list[Joined]
    duplicates: list[Joined]

    @property
    def changed(self) -> list[Joined]:
        return self.new + self.relabelled


@dataclass(frozen=True)
class Accuracy:
    model: str
    version: str
    rows: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows if self.rows else float("nan")


class LabelIndex:
    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self.state = SqliteState(path, _SCHEMA, lambda message: IndexBusy(f"label index: {message}"),
                                 busy_timeout_s=busy_timeout_s)  # fmt: skip

    def apply(
        self,
        model: str,
        rows: Sequence[Joined],
        rejected_reasons: Sequence[str],
        store: Callable[[list[Joined]], None],
        *,
        now: float | None = None,
    ) -> Applied:
        """Record a batch: classify each row, call ``store`` with the new and relabelled rows (the Parquet
        write), then count everything; ``store`` raising rolls the whole batch back."""
        now = time.time() if now is None else now
        with self.state.transaction() as db:
            new, relabelled, duplicates = [], [], []
            for row in rows:
                found = db.execute(
                    "SELECT label FROM labels WHERE model = ? AND request_id = ?", (model, row.request_id)
                ).fetchone()
                if found is None:
                    new.append(row)
                elif found[0] == row.label:
                    duplicates.append(row)
                else:
                    relabelled.append(row)
            applied = Applied(new, relabelled, duplicates)
            for row in applied.changed:
                db.execute(
                    "INSERT INTO labels (model, request_id, label, version, predicted, request_ts, labelled_at,"
                    " received_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (model, request_id) DO UPDATE SET label = excluded.label,"
                    " labelled_at = excluded.labelled_at, received_at = excluded.received_at,"
                    " source = excluded.source, relabels = relabels + 1",
                    (model, row.request_id, row.label, row.version, row.predicted, row.request_ts,
                     row.labelled_at, now, row.source),
                )  # fmt: skip
            self._count(db, model, "received", "new", len(new))
            self._count(db, model, "received", "relabel", len(relabelled))
            self._count(db, model, "received", "duplicate", len(duplicates))
            for reason in rejected_reasons:
                self._count(db, model, "rejected", reason, 1)
            for row in applied.changed:
                lag = max(0.0, (row.labelled_at or now) - row.request_ts)
                self._count(db, model, "lag", "sum", lag)
                self._count(db, model, "lag", "count", 1)
                for bound in LAG_BUCKETS:
                    if lag <= bound:
                        self._count(db, model, "lag_le", repr(bound), 1)
            if applied.changed:
                store(applied.changed)
        return applied

    @staticmethod
    def _count(db: sqlite3.Connection, model: str, name: str, key: str, value: float) -> None:
        if value:
            db.execute(
                "INSERT INTO counts (model, name, key, value) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model, name, key) DO UPDATE SET value = value + excluded.value",
                (model, name, key, value),
            )

    def counts(self) -> dict[tuple[str, str, str], float]:
        """Every counter as ``{(model, name, key): value}`` (a handful of rows per model)."""
        conn = self.state.connect()
        try:
            return {(m, n, k): v for m, n, k, v in conn.execute("SELECT model, name, key, value FROM counts")}
        finally:
            conn.close()

    def accuracy(self, model: str, *, since: float) -> list[Accuracy]:
        """Accuracy of each version on the labelled requests it served since ``since`` (epoch seconds)."""
        conn = self.state.connect()
        try:
            rows = conn.execute(
                "SELECT version, COUNT(*), SUM(label = predicted) FROM labels"
                " WHERE model = ? AND request_ts >= ? GROUP BY version ORDER BY version",
                (model, since),
            ).fetchall()
        finally:
            conn.close()
        return [Accuracy(model, version, int(n), int(correct or 0)) for version, n, correct in rows]
