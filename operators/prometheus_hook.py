"""Airflow Hook for Prometheus: owns the connection (type ``prometheus``) and the prometheus-api-client.

Connection: ``host`` (with or without scheme), ``port``, ``schema`` ("http"/"https"); optional
``login``/``password`` for basic auth and extra ``{"headers": {...}, "disable_ssl": false}``. The local
stack defines ``prometheus_default``; production defines it in Airflow (docker-compose.yml).
"""

from __future__ import annotations

import math
from typing import Any

from airflow.sdk import BaseHook

from operators.errors import PitcrewServiceUnavailable

#: The client's own retry policy (urllib3): a few quick attempts for a Prometheus that restarts.
CLIENT_RETRY = {"total": 3, "backoff_factor": 0.5, "status_forcelist": (500, 502, 503, 504)}


def sample_values(vector: list[dict[str, Any]]) -> list[float]:
    """One float per series of an instant vector; NaN where a series has no value (no data, never a pass)."""
    return [float(series["value"][1]) if series.get("value") else math.nan for series in vector]


class PrometheusHookError(RuntimeError):
    """Prometheus rejected the query (a 4xx) or answered with an unexpected result type."""


class PrometheusUnavailableError(PitcrewServiceUnavailable, PrometheusHookError):
    """Prometheus could not be reached, or kept answering 5xx through the client's retries."""


class PrometheusHook(BaseHook):
    """Interact with Prometheus's HTTP API.

    :param prometheus_conn_id: Airflow connection id (conn type ``prometheus``).
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

    @staticmethod
    def connection_params(conn: Any) -> dict[str, Any]:
        """``url``, ``headers``, ``disable_ssl`` and ``auth`` of a Connection (also used by triggers)."""
        if not conn.host:
            raise ValueError(f"connection {conn.conn_id!r} has no host: set Prometheus's address")
        host = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}"
        url = f"{host.rstrip('/')}:{conn.port}" if conn.port else host.rstrip("/")
        extra = conn.extra_dejson
        params: dict[str, Any] = {
            "url": url,
            "headers": extra.get("headers"),
            "disable_ssl": bool(extra.get("disable_ssl", False)),
        }
        if conn.login:
            params["auth"] = (conn.login, conn.password or "")
        return params

    def get_url(self) -> str:
        """The Prometheus base URL."""
        return self.connection_params(self.get_connection(self.prometheus_conn_id))["url"]

    def get_conn(self) -> Any:
        """A ``prometheus_api_client.PrometheusConnect`` for this connection (created once)."""
        if self._client is None:
            from prometheus_api_client import PrometheusConnect
            from urllib3.util.retry import Retry

            params = self.connection_params(self.get_connection(self.prometheus_conn_id))
            self._client = PrometheusConnect(timeout=self.timeout_s, retry=Retry(**CLIENT_RETRY), **params)
        return self._client

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; each result is ``{"metric": {labels}, "value": [ts, "v"]}`` (a vector).

        :raises PrometheusUnavailableError: unreachable, or 5xx after the client's retries (retryable).
        :raises PrometheusHookError: the query was refused or did not give a vector.
        """
        import requests
        from prometheus_api_client.exceptions import PrometheusApiClientException

        try:
            result = self.get_conn().custom_query(query=expr)
        except requests.RequestException as exc:
            raise PrometheusUnavailableError(f"Prometheus unreachable for {expr!r}: {exc}") from exc
        except PrometheusApiClientException as exc:
            raise PrometheusHookError(f"query {expr!r} failed: {exc}") from exc
        # A scalar or string answer is a list too ([ts, "v"]), and a range vector has "values": not samples.
        if not isinstance(result, list) or not all(isinstance(s, dict) and "value" in s for s in result):
            raise PrometheusHookError(f"query {expr!r} did not return an instant vector")
        return result

    def values(self, expr: str) -> list[float]:
        """One float per series of an instant query (NaN kept: the canary treats it as no data)."""
        return sample_values(self.query(expr))

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
        except Exception as exc:  # noqa: BLE001 - reported to the UI, not raised
            return False, f"{type(exc).__name__}: {exc}"
        return (True, "Prometheus is reachable") if ok else (False, "Prometheus did not answer")
