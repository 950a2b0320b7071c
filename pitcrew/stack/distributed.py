"""The distributed profile: the production topology of docker-compose.yml, run on one machine.

Airflow on PostgreSQL with the CeleryExecutor on Redis, one Celery worker per queue of
:data:`pitcrew.stack.topology.WORKERS` (``default`` and ``gpu``), MLflow on PostgreSQL with artifacts
proxied by the server, and the same Triton, Prometheus and Alertmanager as the embedded stack.

Each worker is its own process tree with its own ``AIRFLOW_HOME`` and working directory, and names itself
on the task instances it runs (:mod:`pitcrew.stack.worker_identity`). Workers share with the other
processes only the declared shared storage (``PITCREW_SHARED_DIRS``: the pitcrew home, which holds run
workspaces, the inference log, feedback, metrics and task logs, and the model repository) and reach
everything else over the network, as containers of the compose file do.
"""

from __future__ import annotations

import json
import socket

from pitcrew.settings import Settings
from pitcrew.stack.airflow_component import airflow_component, airflow_env
from pitcrew.stack.base import Component, Health, Process, venv_bin
from pitcrew.stack.components import (
    alertmanager_component,
    mlflow_component,
    prometheus_component,
    triton_component,
)  # fmt: skip
from pitcrew.stack.datastores import (
    broker_url,
    database_url,
    pgpass_file,
    postgres_component,
    redis_component,
)  # fmt: skip
from pitcrew.stack.topology import DEFAULT_QUEUE, WORKERS, Worker, scheduling_env

HOSTNAME_CALLABLE = "pitcrew.stack.worker_identity.hostname"


def distributed_airflow_env(settings: Settings) -> dict[str, str]:
    """The embedded stack's Airflow environment, moved onto PostgreSQL, Redis and Celery."""
    env = airflow_env(settings)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            **scheduling_env(),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(settings, "airflow"),
            "AIRFLOW__CELERY__BROKER_URL": broker_url(settings),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url(settings, "airflow"),
            "AIRFLOW__CELERY__DEFAULT_QUEUE": DEFAULT_QUEUE,
            "PGPASSFILE": str(pgpass_file(settings)),
            "PITCREW_SHARED_DIRS": json.dumps([str(p) for p in settings.shared_roots]),
            "PITCREW_SECRETS_DIR": str(settings.secrets_path),
            "PITCREW_AIRFLOW_INTERNAL_URL": settings.airflow_task_url,
        }
    )
    return env


def worker_env(settings: Settings, worker: Worker) -> dict[str, str]:
    home = settings.home_dir / "workers" / worker.queue
    env = distributed_airflow_env(settings)
    env.update(
        {
            "AIRFLOW_HOME": str(home / "airflow"),
            "PITCREW_WORKER_NAME": worker.worker_name,
        }
    )
    return env


def celery_node(worker: Worker) -> str:
    """The worker's Celery node name (``--celery-hostname``; Celery expands ``%h`` to this host's name)."""
    return f"{worker.service}@{socket.gethostname()}"


def worker_component(settings: Settings, worker: Worker) -> Component:
    home = settings.home_dir / "workers" / worker.queue

    def processes() -> list[Process]:
        home.mkdir(parents=True, exist_ok=True)
        argv = [
            str(venv_bin() / "airflow"), "celery", "worker",
            "--queues", worker.queue, "--concurrency", str(worker.concurrency),
            "--celery-hostname", f"{worker.service}@%h",
            # Airflow's log server listens on every interface; task logs are on the shared storage, where
            # the API server reads them, so the worker serves none.
            "--skip-serve-logs",
        ]  # fmt: skip
        return [Process(worker.component, argv, worker_env(settings, worker), home)]

    def health() -> Health:
        # Healthy means the worker answers a Celery ping through the broker, as a queued task would reach it.
        from celery import Celery

        app = Celery(broker=broker_url(settings))
        try:
            replies = app.control.ping(destination=[celery_node(worker)], timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - any broker failure is "not healthy", with its name
            return Health(False, type(exc).__name__)
        finally:
            app.close()
        return Health(bool(replies), "ok" if replies else "no answer to a Celery ping")

    return Component(
        name=worker.component,
        url=f"celery://{worker.service} (queue {worker.queue})",
        ports=[],
        processes=processes,
        health=health,
    )


def distributed_components(settings: Settings) -> list[Component]:
    """In start order: the databases, then what Airflow's tasks call, then Airflow and its workers."""
    return [
        postgres_component(settings),
        redis_component(settings),
        mlflow_component(
            settings,
            backend_store_uri=database_url(settings, "mlflow"),
            extra_env=lambda: {"PGPASSFILE": str(pgpass_file(settings))},
        ),
        triton_component(settings),
        airflow_component(settings, distributed_airflow_env),
        *(worker_component(settings, w) for w in WORKERS),
        alertmanager_component(settings),
        prometheus_component(settings),
    ]
