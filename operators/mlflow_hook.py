"""Airflow Hook for the MLflow tracking server and model registry."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: MLflow's own HTTP retry policy (its default is 7 retries with a factor-2 backoff: minutes per call).
#: Bounded here so a task try gives up in seconds and Airflow's task retry takes over (docs/design.md).
RETRY_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


class MlflowHook(BaseHook):
    """Owns the MLflow connection: turns an Airflow Connection into an ``MlflowClient``.

    The connection's host (with scheme) and port give the tracking URI; ``extra.registry_uri`` may
    name a separate registry; ``extra.http_max_retries`` overrides the client's retry count. Login and
    password, when set, become MLflow's basic-auth variables.

    :param mlflow_conn_id: Airflow connection id (conn type ``mlflow``).
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    @staticmethod
    def tracking_uri_from(host: str | None, port: int | None, schema: str | None = None) -> str:
        if not host:
            raise ValueError("an mlflow connection needs the tracking server's host")
        if "://" not in host:
            host = f"{schema or 'http'}://{host}"
        return f"{host.rstrip('/')}:{port}" if port else host.rstrip("/")

    @cached_property
    def tracking_uri(self) -> str:
        conn = self.get_connection(self.mlflow_conn_id)
        return self.tracking_uri_from(conn.host, conn.port, conn.schema)

    def get_conn(self) -> MlflowClient:
        from mlflow import MlflowClient

        conn = self.get_connection(self.mlflow_conn_id)
        extra: dict[str, Any] = conn.extra_dejson
        # MLflow reads credentials and its retry policy from the environment of the calling process; a
        # task is its own process, so this configures only the task that asked.
        if conn.login:
            os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
            os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
        for name, value in RETRY_ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)
        if "http_max_retries" in extra:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(int(extra["http_max_retries"]))
        return MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=extra.get("registry_uri", self.tracking_uri)
        )

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_conn().search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - reported to the UI, not raised
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"MLflow at {self.tracking_uri} answered"
