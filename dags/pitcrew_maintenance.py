"""
### pitcrew maintenance — one Airflow DAG per model in the models file

Started by the alert webhook, the `pitcrew_watch` poller, or by hand (the trigger form has the params).

`data_quality` → `drift` (no drift: record and stop) → `fine_tune` (queue `gpu`) → `evaluate` against the
champion (reject: record and stop) → `compile` (parity-checked) → `register` in MLflow → `replay` of logged
traffic → **`approval`** (a human; timeout = reject) → `hot_swap` into Triton → `canary` on Prometheus
(failed: automatic `rollback`; inconclusive: a human decides) → `promote` the MLflow aliases.

Only one run per model at a time; swaps go through the `pitcrew_triton_swaps` pool. Params: `dry_run`
(everything up to the replay, no approval, no swap), `force_retrain`, `skip_drift`, `window_hours`.
"""

from __future__ import annotations

from operators.pipeline_dag import build_pipeline_dag
from pitcrew.models_file import load_models_file
from pitcrew.settings import get_settings

for _entry in load_models_file(get_settings().models_file).models:
    _dag = build_pipeline_dag(_entry, nightly=False, doc_md=__doc__)
    globals()[_dag.dag_id] = _dag
