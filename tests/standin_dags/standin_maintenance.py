"""STAND-IN for tests and benchmarks only: a maintenance DAG per model with the real id and params.

Alert-path tests and ``benchmarks/alert_latency.py`` need a DAG that the webhook can start and that finishes
at once; the real maintenance DAG would fine-tune. Its params are the real DAG's (so the same conf is
validated the same way when a run is created) and its one task records what the run was asked.
"""

from __future__ import annotations

from airflow.sdk import DAG, task

from pitcrew_dags.common import dag_args, models, run_params

for entry in models():
    with DAG(
        dag_id=f"pitcrew_maintenance_{entry.name}",
        schedule=None,
        params=run_params(entry, trigger="manual", with_drift=True),
        tags=["pitcrew", "test-stand-in"],
        **{**dag_args(), "max_active_runs": 64},
    ) as dag:

        @task
        def record_trigger(params: dict | None = None) -> dict:
            params = params or {}
            return {
                "model": params.get("model"),
                "trigger": params.get("trigger"),
                "alert": params.get("alert"),
            }

        record_trigger()
    globals()[dag.dag_id] = dag
