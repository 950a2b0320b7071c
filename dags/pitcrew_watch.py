"""
### pitcrew_watch

Polls Prometheus every few minutes, besides Alertmanager's push:

1. `poll`: firing `ALERTS`, and the queries of the routing file (error ratio, p99 latency, mean confidence,
   drift score), from the `prometheus_conn_id` connection.
2. `forward`: every finding is posted to the pitcrew webhook (connection `pitcrew_webhook`), which applies
   the same dedup, cooldown and daily cap as for Alertmanager's alerts and starts
   `pitcrew_maintenance_<model>`.
3. `remind` (independent of the two): approvals of pitcrew DAGs still unanswered after the model's
   `approval_reminder_after_h` (default half of `approval_timeout_h`) are reminded once on each channel of
   the model's `notify` list; waiting requests are read from Airflow's REST API (connection
   `pitcrew_airflow_api`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param

from operators.watch_operators import (
    AlertWebhookOperator,
    ApprovalReminderOperator,
    PrometheusFindingsOperator,
)

with DAG(
    dag_id="pitcrew_watch",
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=4),
    render_template_as_native_obj=True,
    tags=["pitcrew", "alerts"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "prometheus_conn_id": Param(
            "prometheus_default",
            type="string",
            title="Prometheus connection",
            description="Airflow connection of type prometheus.",
        ),
        "forward": Param(
            True,
            type="boolean",
            title="Forward findings",
            description="Post findings to the webhook (off: only report what would be posted).",
        ),
    },  # fmt: skip
):
    poll = PrometheusFindingsOperator(task_id="poll", prometheus_conn_id="{{ params.prometheus_conn_id }}")
    AlertWebhookOperator(task_id="forward", entries=poll.output, forward="{{ params.forward }}")
    ApprovalReminderOperator(task_id="remind", retries=0)  # the next poll tries again
