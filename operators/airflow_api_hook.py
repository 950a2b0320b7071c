"""Airflow Hook for Airflow's own REST API, as the read-only service user of the ``pitcrew_airflow_api``
connection (created by ``pitcrew airflow-init`` for the simple auth manager; any auth manager's user with
read access to DAG runs and human-in-the-loop details works)."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from pitcrew.airflow_api import AirflowApi


class AirflowApiHook(BaseHook):
    """Owns the REST API connection: host, port and scheme of the API server; login and password.

    :param airflow_api_conn_id: Airflow connection id (conn type ``http``).
    """

    conn_name_attr = "airflow_api_conn_id"
    default_conn_name = "pitcrew_airflow_api"
    conn_type = "http"
    hook_name = "pitcrew Airflow REST API"

    def __init__(self, airflow_api_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.airflow_api_conn_id = airflow_api_conn_id

    @cached_property
    def api(self) -> AirflowApi:
        """A client logged in as the connection's user (a JWT from ``POST /auth/token``)."""
        from pitcrew.airflow_api import AirflowApi

        conn = self.get_connection(self.airflow_api_conn_id)
        if not conn.host or not conn.login:
            raise ValueError(f"connection {self.airflow_api_conn_id} needs the API server's host and a login")
        url = f"{conn.schema or 'http'}://{conn.host}" + (f":{conn.port}" if conn.port else "")
        return AirflowApi(url, conn.login, conn.password or "")

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
        """The human-in-the-loop request and answer Airflow recorded for a task, or None if it has none."""
        return self.api.hitl_detail(dag_id, run_id, task_id)
