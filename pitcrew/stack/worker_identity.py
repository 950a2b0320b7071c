"""The name a Celery worker records on the task instances it runs (Airflow's ``core.hostname_callable``).

Two workers on one machine (the distributed profile) would both record the machine's FQDN, and the UI
could not tell which one ran a task. Each worker's environment sets ``PITCREW_WORKER_NAME``; everywhere
else the FQDN is kept, as Airflow does by default.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("PITCREW_WORKER_NAME") or socket.getfqdn()
