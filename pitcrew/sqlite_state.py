"""A small SQLite state file shared by processes: WAL, autocommit, and ``BEGIN IMMEDIATE`` transactions.

The alert policy and the feedback label index both keep state that several API-server workers (and the
poller, through the webhook) update at once. ``BEGIN IMMEDIATE`` takes the write lock up front, so
concurrent writers are serialised by SQLite; a lock held past the busy timeout becomes the caller's
retryable error (the webhook answers 503 and the sender retries).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class SqliteState:
    def __init__(
        self, path: Path, schema: str, busy: Callable[[str], Exception], *, busy_timeout_s: float = 10.0
    ) -> None:
        """:param busy: builds the exception raised when the write lock stays taken (given a message)."""
        self.path = path
        self.busy = busy
        self.busy_timeout_s = busy_timeout_s
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(schema)
        finally:
            conn.close()

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; rolled back if the body raises."""
        conn = self.connect()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise self.busy(f"{self.path} stayed locked; retry") from exc
                raise
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()
