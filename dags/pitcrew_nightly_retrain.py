"""
### pitcrew nightly retrain — one DAG per model with a `schedule` in the models file

The maintenance chain without the drift check (the schedule is the reason to retrain), on the newest
labelled window, with the same gates:

1. `data_quality` of the last `window_hours` of logged traffic and its feedback labels.
2. **train**: `prepare_training` (no champion yet, or too few new labels: the run ends green as
   `nothing_to_do`) → `fine_tune` (queue `gpu`) → `evaluate` against the champion → `compile` (queue `gpu`).
3. `register` in MLflow → `replay` → **`approval`** by a human (timeout = reject; `dry_run` stops here).
4. **deploy**: `hot_swap` → `canary` → `canary_decision` → `promote` or `rollback`.
5. `record_outcome` (teardown).

Design: `docs/design.md`.
"""

from __future__ import annotations

from airflow.sdk import DAG

from operators.data_operators import DataQualityOperator
from pitcrew_dags.common import dag_args, models, run_params
from pitcrew_dags.release_chain import release_chain

for entry in models():
    if not entry.schedule:
        continue
    with DAG(
        dag_id=f"pitcrew_nightly_retrain_{entry.name}",
        schedule=entry.schedule,
        params=run_params(entry, trigger="schedule", with_drift=False),
        tags=["pitcrew", entry.name, "nightly"],
        doc_md=__doc__,
        **dag_args(),
    ) as dag:
        quality = DataQualityOperator(
            task_id="data_quality", model=entry.name, window_hours="{{ params.window_hours }}"
        )
        release_chain(entry, after=quality, drift=None, skip_when_nothing_to_learn=True)
    globals()[dag.dag_id] = dag
