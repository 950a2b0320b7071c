"""A small client of Airflow's public REST API (v2) for checks from outside the API server.

Used by integration tests and the latency benchmark to see runs the webhook created; it logs in like any
user (``POST /auth/token``), so it exercises Airflow's auth rather than bypassing it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx


class AirflowApiError(RuntimeError):
    """Airflow answered with an unexpected status; the message names the call."""


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        self._token: str | None = None

    def close(self) -> None:
        self._client.close()

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            response = self._client.post("/auth/token", json=self._credentials)
            if response.status_code not in (200, 201):
                raise AirflowApiError(f"POST /auth/token: HTTP {response.status_code}: {response.text[:200]}")
            self._token = response.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self._client.get(f"/api/v2{path}", params=params, headers=self._headers())

    def dag_exists(self, dag_id: str) -> bool:
        return self.get(f"/dags/{dag_id}").status_code == 200

    def wait_for_dag(self, dag_id: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.dag_exists(dag_id):
                return
            time.sleep(1.0)
        raise AirflowApiError(f"DAG {dag_id} was not parsed within {timeout_s:.0f}s")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        response = self._client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": paused}, headers=self._headers())
        if response.status_code != 200:
            raise AirflowApiError(f"PATCH dag {dag_id}: HTTP {response.status_code}: {response.text[:200]}")

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        response = self.get(f"/dags/{dag_id}/dagRuns", limit=1000)
        if response.status_code != 200:
            raise AirflowApiError(f"GET dagRuns of {dag_id}: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()["dag_runs"]

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Start a manual run through the REST API (as the logged-in user); return its run id."""
        response = self._client.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}, headers=self._headers()
        )
        if response.status_code not in (200, 201):
            raise AirflowApiError(f"POST dagRuns of {dag_id}: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        response = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        if response.status_code != 200:
            raise AirflowApiError(f"GET dagRun {run_id}: HTTP {response.status_code}")
        return response.json()

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        response = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        if response.status_code != 200:
            raise AirflowApiError(f"GET taskInstances of {run_id}: HTTP {response.status_code}")
        return response.json()["task_instances"]
