"""Celery configuration of pitcrew's Airflow workers: Airflow's default, plus modules preloaded before the fork.

A Celery worker forks its pool processes once; each task then runs in a supervisor inside a pool process,
which forks the task process. Airflow 3's provider preloads only the operators: the supervisor, the task
runner and the DAG bag were imported anew by every pool process on its first task and by every task
process, ~0.5 s of CPU per task. On a 2-core machine an alert burst of 50 trivial runs spent most of its
first 30 s importing (benchmarks/alert_latency.py, distributed profile: queued -> running 10-30 s).
Imported here, in the worker's main process, they are shared by every fork.

Selected by ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS`` (pitcrew.stack.distributed); the scheduler reads
the same dict to send tasks, and Celery imports ``imports`` only in a worker.
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

#: What a task's supervisor and task process import on every task (Airflow 3.3).
PRELOADED_MODULES = (
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.bundles.manager",
    "airflow.dag_processing.dagbag",
    "airflow.providers.standard.decorators.python",
)

CELERY_CONFIG = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), *PRELOADED_MODULES),
}
