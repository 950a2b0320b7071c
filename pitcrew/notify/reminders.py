"""Which waiting requests were reminded, so each channel gets one reminder per request.

A small JSON file under the pitcrew home (``<home>/notify/reminders.json``), read and written under a
file lock by the watch DAG's ``remind`` task. A request is keyed by its task instance and the time it was
created, so a request asked again (a cleared task) is reminded again. A channel that failed is tried again
at the next poll, :data:`MAX_ATTEMPTS` times in all; entries of requests no longer waiting are dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from filelock import FileLock

#: Tries per channel and request (one per poll of the watch DAG) before giving up on that channel.
MAX_ATTEMPTS = 3


def reminders_file(home: Path) -> Path:
    return home / "notify" / "reminders.json"


def request_key(dag_id: str, run_id: str, task_id: str, map_index: int, created_at: str) -> str:
    return f"{dag_id}/{run_id}/{task_id}/{map_index}@{created_at}"


def reminder_due(created_at: dt.datetime, now: dt.datetime, after_h: float) -> bool:
    """True once the request has waited ``after_h`` hours."""
    return now - created_at >= dt.timedelta(hours=after_h)


class ReminderLog:
    """The reminders file, locked from ``with`` to its end; written back on a clean exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock", timeout=60)
        self.entries: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> ReminderLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self.entries = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError):
            self.entries = {}  # a damaged file: at worst one reminder is sent twice
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
                os.replace(tmp, self.path)
        finally:
            self._lock.release()

    def pending(self, key: str, channels: list[str]) -> list[str]:
        """The channels still to remind of ``key``: neither delivered nor out of attempts."""
        entry = self.entries.get(key, {})
        delivered, attempts = set(entry.get("delivered", [])), entry.get("attempts", {})
        return [c for c in channels if c not in delivered and attempts.get(c, 0) < MAX_ATTEMPTS]

    def record(self, key: str, channel: str, *, delivered: bool, now: dt.datetime) -> None:
        entry = self.entries.setdefault(key, {"delivered": [], "attempts": {}})
        entry["attempts"][channel] = entry["attempts"].get(channel, 0) + 1
        if delivered and channel not in entry["delivered"]:
            entry["delivered"].append(channel)
        entry["last"] = now.isoformat()

    def keep_only(self, keys: set[str]) -> None:
        """Forget the requests that no longer wait (answered, timed out, or their run gone)."""
        self.entries = {k: v for k, v in self.entries.items() if k in keys}
