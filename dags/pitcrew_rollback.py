"""
### pitcrew rollback — one DAG per model, started by hand

1. **`approval`**: shows what will be restored (the MLflow `previous` version next to what Triton serves
   now) and asks a human; rejecting, or no answer before the timeout, changes nothing. The model's
   `notify` channels are told when it waits, reminded before the timeout, and told when it timed out.
2. `restore` (pool `pitcrew_triton_swaps`): Triton serves the approved version again, loaded beside the
   current one (no failed request); then MLflow's aliases move back (`champion` ↔ `previous`).

Design: `docs/design.md`.
"""

from __future__ import annotations

from airflow.sdk import DAG

from operators.approval_operators import RollbackApprovalOperator
from operators.notifiers import approval_notifiers
from operators.triton_operators import RestorePreviousChampionOperator
from pitcrew_dags.common import approval_timeout, approvers, dag_args, models, xcom

for entry in models():
    with DAG(
        dag_id=f"pitcrew_rollback_{entry.name}",
        schedule=None,
        tags=["pitcrew", entry.name, "rollback"],
        doc_md=__doc__,
        **dag_args(),
    ) as dag:
        approval = RollbackApprovalOperator(
            task_id="approval",
            model=entry.name,
            assigned_users=approvers(entry),
            response_timeout=approval_timeout(entry),
            notifiers=approval_notifiers(entry, "rollback"),
            retries=0,
        )
        restore = RestorePreviousChampionOperator(
            task_id="restore", model=entry.name, version=xcom("approval", "previous")
        )
        approval >> restore
    globals()[dag.dag_id] = dag
