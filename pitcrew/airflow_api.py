"""A small facade over Airflow's official REST client (``apache-airflow-client``) for the demo, tests and benchmarks.

It logs in as a real user (``POST /auth/token``), starts DAG runs, waits for task states and answers
human-in-the-loop approvals the same way the UI does, so the demo exercises Airflow's real auth.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import tenacity
from airflow_client import client as af


class AirflowApiError(RuntimeError):
    """Airflow refused a call or a run did not reach the awaited state in time."""


TERMINAL_RUN_STATES = {"success", "failed"}

#: Idempotent writes (pausing a DAG) are retried on a server error: on the embedded profile's SQLite the
#: API server answers 500 "Database error" while the scheduler or dag-processor holds the write lock.
def _retry_server_error() -> tenacity.Retrying:
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, af.ApiException) and (exc.status or 0) >= 500
        ),
        stop=tenacity.stop_after_attempt(5),
        wait=tenacity.wait_exponential(multiplier=0.5, max=4),
        reraise=True,
    )


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        response = httpx.post(
            f"{self.base_url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        if response.status_code not in (200, 201):
            raise AirflowApiError(
                f"login as {username!r} failed: HTTP {response.status_code} {response.text[:200]}"
            )
        config = af.Configuration(host=self.base_url, access_token=response.json()["access_token"])
        self._client = af.ApiClient(config)
        self.dags = af.DAGApi(self._client)
        self.runs = af.DagRunApi(self._client)
        self.tasks = af.TaskInstanceApi(self._client)
        self.xcom = af.XComApi(self._client)

    # ------------------------------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout_s: float = 120) -> None:
        """Wait until the dag-processor has parsed ``dag_id`` (and unpause it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                dag = self.dags.get_dag(dag_id)
                if dag.is_paused:
                    self.set_paused(dag_id, False)
                return
            except af.ApiException as exc:
                if exc.status != 404:
                    raise
            time.sleep(2)
        raise AirflowApiError(f"DAG {dag_id!r} was not parsed within {timeout_s:.0f}s")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause ``dag_id`` (a paused DAG's runs stay queued)."""
        _retry_server_error()(self.dags.patch_dag, dag_id, af.DAGPatchBody(is_paused=paused))

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        body = af.TriggerDAGRunPostBody(conf=conf, logical_date=None, dag_run_id=run_id)
        return self.runs.trigger_dag_run(dag_id, body).dag_run_id

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.runs.get_dag_run(dag_id, run_id).state.value)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One run as the REST API's JSON (``dag_run_id``, ``state``, ``conf``, ``triggering_user_name`` ...)."""
        return self.runs.get_dag_run(dag_id, run_id).model_dump(mode="json")

    def dag_runs(self, dag_id: str, page_size: int = 100) -> list[dict[str, Any]]:
        """Every run of ``dag_id``, oldest first, as the REST API's JSON; pages through the API's limit."""
        runs: list[dict[str, Any]] = []
        while True:
            page = self.runs.get_dag_runs(dag_id, limit=page_size, offset=len(runs), order_by=["id"]).dag_runs
            runs.extend(run.model_dump(mode="json") for run in page)
            if len(page) < page_size:
                return runs

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        response = self.tasks.get_task_instances(dag_id, run_id, limit=100)
        return {
            ti.task_id: (ti.state.value if ti.state is not None else None) for ti in response.task_instances
        }

    def xcom_value(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.xcom.get_xcom_entry(dag_id, task_id, run_id, key, deserialize=True)
        return entry.actual_instance.value  # the generated client wraps the two response shapes in anyOf

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any] | None:
        """The human-in-the-loop request and its answer as Airflow recorded them; None if the task has none."""
        try:
            detail = self.tasks.get_hitl_detail(dag_id, run_id, task_id, map_index)
        except af.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return detail.to_dict()

    def waiting_approvals(self, dag_id_prefix: str = "pitcrew_", page_size: int = 100) -> list[dict[str, Any]]:
        """Human-in-the-loop requests still waiting (no answer, task ``awaiting_input``) in the DAGs whose id
        starts with ``dag_id_prefix``, oldest first, as the REST API's JSON (``GET /dags/~/dagRuns/~/hitlDetails``)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.tasks.get_hitl_details(
                "~", "~", limit=page_size, offset=len(found), order_by=["created_at"],
                dag_id_prefix_pattern=dag_id_prefix, response_received=False, state=["awaiting_input"],
            ).hitl_details  # fmt: skip
            found.extend(detail.model_dump(mode="json") for detail in page)
            if len(page) < page_size:
                return found

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """Mark a task instance as a user does in the UI ("Mark as success"), as this user."""
        body = af.PatchTaskInstanceBody(new_state=af.TaskInstanceState(state))
        self.tasks.patch_task_instance(dag_id, run_id, task_id, body)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The text of one try's log, one JSON line per structured record with all its fields (a failure's
        ``error_detail`` too, which the generated client's model drops)."""
        response = self.tasks.get_log_without_preload_content(
            dag_id, run_id, task_id, try_number, full_content=True, accept="application/json"
        )
        content = json.loads(response.data).get("content")
        if isinstance(content, list):
            return "\n".join(json.dumps(item, default=str) for item in content)
        return str(content)

    def wait(self, what: str, predicate: Callable[[], bool], timeout_s: float, poll_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(poll_s)
        raise AirflowApiError(f"timed out after {timeout_s:.0f}s waiting for {what}")

    def wait_for_task(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout_s: float
    ) -> str:
        """Wait until ``task_id`` is in one of ``states``; fail early if the run ends first."""
        seen: dict[str, str | None] = {}

        def reached() -> bool:
            seen.update(self.task_states(dag_id, run_id))
            if seen.get(task_id) in states:
                return True
            if self.run_state(dag_id, run_id) in TERMINAL_RUN_STATES:
                raise AirflowApiError(f"run {run_id} ended before {task_id} reached {states}: {seen}")
            return False

        self.wait(f"{dag_id}.{task_id} in {sorted(states)} (now {seen.get(task_id)})", reached, timeout_s)
        return str(seen[task_id])

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float) -> str:
        state: list[str] = []

        def done() -> bool:
            state[:] = [self.run_state(dag_id, run_id)]
            return state[0] in TERMINAL_RUN_STATES

        self.wait(f"run {run_id} of {dag_id} to finish", done, timeout_s)
        return state[0]

    #: Airflow 3.3.2: the worker that parked a task in ``awaiting_input`` reports "success" to the executor
    #: late, often ~5 s after the park: its supervisor sees the task process's sockets close before it can
    #: reap the process, then blocks in a ``select`` on no sockets for ``[workers] min_heartbeat_interval``
    #: (5 s; ``_monitor_subprocess`` in airflow/sdk/execution_time/supervisor.py). While the answered task
    #: is still ``scheduled`` the scheduler ignores that late event, but once it has queued the resumed try
    #: (same try number, so the same executor key) it takes the late event as the resumed try's own and
    #: fails the task as killed externally ("state mismatch" in the event log; ``process_executor_events`` in
    #: airflow/jobs/scheduler_job_runner.py). An approval has no retries, so the run fails. The answer must
    #: land after the scheduler has read that event: 5 s for the supervisor plus room for a scheduler loop
    #: on a slow machine, counted from when the caller saw ``awaiting_input`` (never before the park).
    #: 5 s left no margin (most likely why a rejected run failed once in CI). A person never answers that
    #: fast; scripts wait.
    SETTLE_S = 10.0

    def respond(
        self, dag_id: str, run_id: str, task_id: str, option: str, params: dict | None = None
    ) -> None:
        """Answer a waiting approval as this user (``Approve`` or ``Reject``), :attr:`SETTLE_S` from now.

        Call it once the task is ``awaiting_input`` (:meth:`wait_for_task`).
        """
        time.sleep(self.SETTLE_S)
        payload = af.UpdateHITLDetailPayload(chosen_options=[option], params_input=params or {})
        try:
            self.tasks.update_hitl_detail(dag_id, run_id, task_id, -1, payload)
        except af.ApiException as exc:
            raise AirflowApiError(
                f"{self.username} could not answer {task_id}: HTTP {exc.status} {exc.body}"
            ) from exc
