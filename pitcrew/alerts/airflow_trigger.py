"""Create a DAG run from inside the Airflow API server (where the webhook plugin runs).

Why in-process ``airflow.api.common.trigger_dag`` rather than a call to the public REST API: the plugin
already runs in the API server with the metadata-database session the REST endpoint itself uses, so
this is the same code path as ``POST /api/v2/dags/{dag_id}/dagRuns`` without a second HTTP hop and
without storing a service user's password for the plugin. Airflow's own auth is untouched: the REST
API still requires its JWT; the webhook authenticates its callers itself (token + HMAC) and can only
start DAGs that the routing file names, with conf the policy builds. Runs are marked
``triggered_by=rest_api`` and ``triggering_user_name=pitcrew-webhook`` so the UI shows their origin.

Airflow imports are local so that the pure package imports without Airflow.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pitcrew.alerts.errors import TriggerRejected, TriggerUnavailable

log = logging.getLogger(__name__)

TRIGGERING_USER = "pitcrew-webhook"
#: Waits between attempts when the metadata database is locked; ~1.5 s in all keeps the response well
#: inside Alertmanager's timeout, after which a 503 makes the sender retry.
RETRY_DELAYS_S = (0.1, 0.3, 1.0)


def open_run(dag_id: str) -> str | None:
    """The newest run of ``dag_id`` still queued or running (an incident in flight), or None."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        return session.scalar(
            select(DagRun.run_id)
            .where(DagRun.dag_id == dag_id, DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]))
            .order_by(DagRun.run_after.desc())
            .limit(1)
        )


def _note(conf: dict[str, Any]) -> str | None:
    """The run's note in the UI: what started it (the run type of every API-created run is "manual")."""
    alert = conf.get("alert") or {}
    if not alert.get("name"):
        return None
    return (f"Started by alert {alert['name']} (fingerprint {alert.get('fingerprint', '?')}, "
            f"from {alert.get('source') or conf.get('trigger')}, firing since {alert.get('starts_at', '?')}).")  # fmt: skip


def trigger_run(dag_id: str, run_id: str, conf: dict[str, Any]) -> str:
    """Create a queued manual run of ``dag_id`` with ``run_id`` and ``conf``; return the run id.

    Idempotent: a run with this id that already exists counts as created.

    :raises TriggerRejected: unknown DAG or run type not allowed (a retry will not help).
    :raises TriggerUnavailable: the database stayed locked/unreachable through the retries.
    """
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    last: Exception | None = None
    for attempt, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
        try:
            run = trigger_dag(
                dag_id,
                run_id=run_id,
                conf=conf,
                run_type=DagRunType.MANUAL,
                triggered_by=DagRunTriggeredByType.REST_API,
                triggering_user_name=TRIGGERING_USER,
                note=_note(conf),
            )
            return run.run_id if run is not None else run_id
        except DagRunAlreadyExists:
            return run_id
        except DagNotFound as exc:
            raise TriggerRejected(f"DAG {dag_id!r} does not exist (is it parsed yet?)") from exc
        except ValueError as exc:  # run type not allowed, invalid run id or conf
            raise TriggerRejected(f"Airflow refused a run of {dag_id!r}: {exc}") from exc
        except (OperationalError, PoolTimeout) as exc:
            last = exc
            log.warning("metadata database unavailable on attempt %d for %s: %s", attempt, dag_id, type(exc).__name__)
            if delay is not None:
                time.sleep(delay)
    raise TriggerUnavailable(f"Airflow's database stayed unavailable creating a run of {dag_id!r}") from last
