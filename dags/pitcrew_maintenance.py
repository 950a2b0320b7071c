"""
### pitcrew maintenance — one DAG per model of the models file

Started by the alert webhook, the `pitcrew_watch` poller, or by hand (the trigger form has the params).

1. `data_quality`: the last `window_hours` of logged traffic joined with feedback labels; bad rows are
   quarantined, not dropped.
2. `drift` against the champion's training data: no drift confirmed → the run ends as `no_drift`
   (unless `force_retrain`; `skip_drift` does not test at all).
3. **train**: `prepare_training` → `fine_tune` (queue `gpu`) → `evaluate` against the champion (a reject
   ends the run) → `compile` (ONNX / TensorRT, parity-checked; queue `gpu`).
4. `register` the challenger in MLflow with its lineage → `replay` logged traffic through it.
5. **`approval`**: a human decides; no answer before the timeout is a rejection. `dry_run` stops before it.
6. **deploy**: `hot_swap` into Triton (pool `pitcrew_triton_swaps`) → `canary` on Prometheus (measured in
   the triggerer) → `canary_decision` → `promote` the MLflow aliases, or `rollback` (a human decides only
   when the canary was inconclusive).
7. `record_outcome` (teardown): how the run ended, into the pipeline metrics.

One run per model at a time. Design: `docs/design.md`.
"""

from __future__ import annotations

from airflow.sdk import DAG

from operators.data_operators import DataQualityOperator, DriftCheckOperator
from pitcrew_dags.common import dag_args, models, run_params, xcom
from pitcrew_dags.release_chain import release_chain

for entry in models():
    with DAG(
        dag_id=f"pitcrew_maintenance_{entry.name}",
        schedule=None,
        params=run_params(entry, trigger="manual", with_drift=True),
        tags=["pitcrew", entry.name, "maintenance"],
        doc_md=__doc__,
        **dag_args(),
    ) as dag:
        quality = DataQualityOperator(
            task_id="data_quality", model=entry.name, window_hours="{{ params.window_hours }}"
        )
        drift = DriftCheckOperator(
            task_id="drift",
            model=entry.name,
            skip_test="{{ params.skip_drift }}",
            proceed_without_drift="{{ params.force_retrain }}",
        )
        quality >> drift
        release_chain(entry, after=drift, drift=xcom("drift"), skip_when_nothing_to_learn=False)
    globals()[dag.dag_id] = dag
