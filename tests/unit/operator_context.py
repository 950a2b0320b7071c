"""Run an operator's ``execute`` outside Airflow: a real DAG around it, a task instance that keeps XComs in a dict.

Only what the operators touch is imitated: ``xcom_push``/``xcom_pull`` (same semantics for one or several
task ids), ``get_task_states``, ``map_index``, ``run_id``. Everything the operator does with files, MLflow
(a SQLite store) or HTTP servers is real; the end-to-end tests run the same operators in real Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import DAG

RUN_ID = "manual__2026-12-01T00:00:00+00:00"


@dataclass
class FakeTaskInstance:
    task_id: str
    dag_id: str = "test_dag"
    run_id: str = RUN_ID
    map_index: int = -1
    id: str = "00000000-0000-0000-0000-000000000001"
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(
        self, task_ids: str | Iterable[str] | None = None, key: str = "return_value", **_: Any
    ) -> Any:
        if task_ids is None or isinstance(task_ids, str):
            return self.xcoms.get((task_ids or self.task_id, key))
        return [self.xcoms.get((task_id, key)) for task_id in task_ids]

    def get_task_states(self, dag_id: str, run_ids: list[str], **_: Any) -> dict[str, dict[str, str]]:
        return {run_id: dict(self.states) for run_id in run_ids}

    def pushed(self, key: str = "return_value") -> Any:
        return self.xcoms.get((self.task_id, key))


def context_for(
    task: Any, *, params: dict[str, Any] | None = None, **xcoms: dict[str, Any]
) -> dict[str, Any]:
    """A context for ``task`` (already in a DAG); ``xcoms`` are upstream results by task id (return values)."""
    ti = FakeTaskInstance(task_id=task.task_id, dag_id=task.dag.dag_id)
    for task_id, value in xcoms.items():
        ti.xcoms[(task_id, "return_value")] = value
    return {
        "ti": ti,
        "task_instance": ti,
        "task": task,
        "dag": task.dag,
        "run_id": ti.run_id,
        "params": params or {},
    }


def in_dag(make_task, *downstream: str, dag_id: str = "test_dag") -> Any:
    """Build the task with ``make_task()`` inside a fresh DAG, followed by empty tasks named ``downstream``."""
    from airflow.providers.standard.operators.empty import EmptyOperator

    with DAG(dag_id=dag_id, schedule=None):
        task = make_task()
        for task_id in downstream:
            task >> EmptyOperator(task_id=task_id)
    return task


def use_models(monkeypatch: Any, tmp_path: Any, *entries: Any) -> Any:
    """Point pitcrew's settings at a models file holding ``entries`` (ModelEntry) and a home under tmp_path."""
    import yaml

    from pitcrew.settings import get_settings

    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [e.model_dump(mode="json") for e in entries]}, sort_keys=False))
    monkeypatch.setenv("PITCREW_MODELS_FILE", str(path))
    monkeypatch.setenv("PITCREW_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    return get_settings()


#: Airflow's record of an approval answered Approve by ``ann`` (what its REST API returns).
APPROVED = {
    "response_received": True,
    "chosen_options": ["Approve"],
    "responded_by_user": {"id": "ann", "name": "ann"},
    "responded_at": "2026-12-01T01:00:00+00:00",
}


def record_hitl(monkeypatch: Any, **details: dict[str, Any] | None) -> list[tuple[str, ...]]:
    """Answer :meth:`AirflowApiHook.hitl_detail` with ``details`` by task id (None: no request recorded);
    returns the calls made (conn id, dag id, run id, task id). The REST API itself is exercised end to end."""
    from operators.airflow_api_hook import AirflowApiHook

    calls: list[tuple[str, ...]] = []

    def hitl_detail(hook: AirflowApiHook, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
        calls.append((hook.airflow_api_conn_id, dag_id, run_id, task_id))
        return details.get(task_id)

    monkeypatch.setattr(AirflowApiHook, "hitl_detail", hitl_detail)
    return calls
