"""Airflow Hook for Prometheus: owns the connection (type ``prometheus``) and the prometheus-api-client.

Connection: ``host`` (with or without scheme), ``port``, ``schema`` ("http"/"https"); optional
``login``/``password`` for basic auth and extra ``{"headers": {...}, "disable_ssl": false}``. When the
connection is not defined (the local stack defines none), the URL comes from pitcrew settings, so no URL is
ever written into a DAG.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException


class PrometheusHookError(RuntimeError):
    """Prometheus answered with an error or an unexpected result type."""


class PrometheusHook(BaseHook):
    """Interact with Prometheus's HTTP API.

    :param prometheus_conn_id: Airflow connection id; falls back to settings when it does not exist.
    :param timeout_s: seconds per HTTP request.
    """

    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "prometheus_default"
    conn_type = "prometheus"
    hook_name = "Prometheus"

    def __init__(self, prometheus_conn_id: str = default_conn_name, *, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.prometheus_conn_id = prometheus_conn_id
        self.timeout_s = timeout_s
        self._client: Any = None

    def _connection_params(self) -> dict[str, Any]:
        try:
            conn = self.get_connection(self.prometheus_conn_id)
        except AirflowNotFoundException:
            from pitcrew.settings import get_settings

            self.log.info("no connection %s; using settings.prometheus_url", self.prometheus_conn_id)
            return {"url": get_settings().prometheus_url}
        host = conn.host or "127.0.0.1"
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}"
        url = f"{host.rstrip('/')}:{conn.port}" if conn.port else host.rstrip("/")
        extra = conn.extra_dejson
        params: dict[str, Any] = {
            "url": url,
            "headers": extra.get("headers"),
            "disable_ssl": extra.get("disable_ssl", False),
        }
        if conn.login:
            params["auth"] = (conn.login, conn.password or "")
        return params

    def get_url(self) -> str:
        """The Prometheus base URL (for Triggers, which poll it with their own async client)."""
        return self._connection_params()["url"]

    def get_conn(self) -> Any:
        """A ``prometheus_api_client.PrometheusConnect`` for this connection (created once)."""
        if self._client is None:
            from prometheus_api_client import PrometheusConnect

            self._client = PrometheusConnect(timeout=self.timeout_s, **self._connection_params())
        return self._client

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; each result is ``{"metric": {labels}, "value": [ts, "v"]}`` (a vector)."""
        try:
            result = self.get_conn().custom_query(query=expr)
        except Exception as exc:  # the client raises its own and requests' errors
            raise PrometheusHookError(f"query {expr!r} failed: {exc}") from exc
        if not isinstance(result, list):
            raise PrometheusHookError(f"query {expr!r} did not return an instant vector")
        return result

    def firing_alerts(self) -> list[dict[str, Any]]:
        """Firing alerts from ``ALERTS``, each ``{"labels": {...}, "active_at": unix seconds | None}``.

        Labels are the alert's own (``__name__`` and ``alertstate`` dropped): the set Alertmanager
        fingerprints. ``ALERTS_FOR_STATE`` holds each alert's activation time.
        """
        active_at: dict[frozenset, float] = {}
        for series in self.query("ALERTS_FOR_STATE"):
            labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
            active_at[frozenset(labels.items())] = float(series["value"][1])
        alerts = []
        for series in self.query('ALERTS{alertstate="firing"}'):
            labels = {k: v for k, v in series["metric"].items() if k not in ("__name__", "alertstate")}
            alerts.append({"labels": labels, "active_at": active_at.get(frozenset(labels.items()))})
        return alerts

    def test_connection(self) -> tuple[bool, str]:
        try:
            ok = self.get_conn().check_prometheus_connection()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return (True, "Prometheus is reachable") if ok else (False, "Prometheus did not answer")
