"""
### pitcrew rollback — one Airflow DAG per model, started by hand

Shows what will be restored (the MLflow `previous` version, and what Triton serves now), asks for
**approval**, then serves the previous champion again in Triton (loaded beside the current one: no failed
request) and moves the MLflow aliases back (`champion` ↔ `previous`). Rejecting changes nothing.
"""

from __future__ import annotations

from operators.pipeline_dag import build_rollback_dag
from pitcrew.models_file import load_models_file
from pitcrew.settings import get_settings

for _entry in load_models_file(get_settings().models_file).models:
    _dag = build_rollback_dag(_entry, doc_md=__doc__)
    globals()[_dag.dag_id] = _dag
