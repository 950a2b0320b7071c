"""Airflow Hook for the MLflow tracking server and model registry."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MlflowHook(BaseHook):
    """Owns the MLflow connection: turns an Airflow Connection into an ``MlflowClient``.

    The connection's host (with scheme) and port give the tracking URI; ``extra.registry_uri`` may
    name a separate registry. Login and password, when set, become MLflow's basic-auth variables.

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
    def tracking_uri_from(host: str, port: int | None, schema: str | None = None) -> str:
        if "://" not in host:
            host = f"{schema or 'http'}://{host}"
        return f"{host.rstrip('/')}:{port}" if port else host.rstrip("/")

    @cached_property
    def tracking_uri(self) -> str:
        conn = self.get_connection(self.mlflow_conn_id)
        return self.tracking_uri_from(conn.host or "127.0.0.1", conn.port, conn.schema)

    def get_conn(self) -> MlflowClient:
        import os

        from mlflow import MlflowClient

        conn = self.get_connection(self.mlflow_conn_id)
        if conn.login:
            os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
            os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
        extra: dict[str, Any] = conn.extra_dejson
        return MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=extra.get("registry_uri", self.tracking_uri)
        )

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_conn().search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - reported to the UI, not raised
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"MLflow at {self.tracking_uri} answered"
