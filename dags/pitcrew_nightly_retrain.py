"""
### pitcrew nightly retrain — one Airflow DAG per model with a `schedule` in the models file

The maintenance chain from fine-tune on, on the newest labelled window, with the same gates: evaluation
against the champion, compile parity, registration, replay, **human approval**, hot-swap, canary with
automatic rollback, alias promotion. No drift check: the schedule is the reason to retrain.
"""

from __future__ import annotations

from operators.pipeline_dag import build_pipeline_dag
from pitcrew.models_file import load_models_file
from pitcrew.settings import get_settings

for _entry in load_models_file(get_settings().models_file).models:
    if _entry.schedule:
        _dag = build_pipeline_dag(_entry, nightly=True, doc_md=__doc__)
        globals()[_dag.dag_id] = _dag
