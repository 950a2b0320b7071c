"""The poller's two steps: read what is wrong from Prometheus, post it to pitcrew's alert webhook.

Polled findings take the same path as Alertmanager's pushes (one policy decides: dedup, cooldown, daily
cap), so the logic lives in :mod:`pitcrew.alerts.watch` and the webhook; these classes only talk to the
servers, through Airflow connections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import requests
import tenacity
from airflow.sdk import BaseOperator

from operators.base import as_bool
from operators.errors import retry_only_transient
from operators.prometheus_hook import PrometheusHook

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The webhook connection: conn type ``http``, host and port of the Airflow API server that mounts the
#: plugin, and the webhook's bearer token as the password (never a header in ``extra``: HttpHook sends
#: every unknown extra key as a header).
WEBHOOK_CONN_ID = "pitcrew_webhook"
#: HttpHook's retry policy for the post (tenacity): quick attempts through a refused connection only.
POST_RETRY = {
    "stop": tenacity.stop_after_attempt(3),
    "wait": tenacity.wait_exponential(multiplier=0.5, max=4),
    "retry": tenacity.retry_if_exception_type((requests.ConnectionError, requests.Timeout)),
    "reraise": True,
}


class PrometheusFindingsOperator(BaseOperator):
    """Firing alerts (``ALERTS``) and breached routing-file queries, as webhook alert entries.

    Alerts keep Alertmanager's fingerprint (same labels, same hash), so an alert seen both pushed and
    polled starts one run. A query breach is kept only for a model no firing alert already names.

    :param prometheus_conn_id: connection of :class:`~operators.prometheus_hook.PrometheusHook` (templated).
    :param routes_file: the routing file with the polled queries; default ``<deploy_dir>/alert_routes.yaml``.
    """

    template_fields: Sequence[str] = ("prometheus_conn_id",)

    def __init__(
        self,
        *,
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
        routes_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prometheus_conn_id, self.routes_file = prometheus_conn_id, routes_file

    @retry_only_transient
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from pathlib import Path

        from pitcrew.alerts.routing import load_routes
        from pitcrew.alerts.service import routes_path
        from pitcrew.alerts.watch import entries_from_alerts, entries_from_query, merge_findings
        from pitcrew.settings import get_settings

        hook = PrometheusHook(self.prometheus_conn_id)
        routes = load_routes(Path(self.routes_file) if self.routes_file else routes_path(get_settings()))
        breaches: list[dict[str, Any]] = []
        for query in routes.queries:
            breaches += entries_from_query(query, hook.query(query.expr))
        findings = merge_findings(entries_from_alerts(hook.firing_alerts()), breaches)
        self.log.info("%d finding(s): %s", len(findings), [f["labels"].get("alertname") for f in findings])
        return findings


class AlertWebhookOperator(BaseOperator):
    """Post alert entries to pitcrew's alert webhook with ``HttpHook``, in Alertmanager's format.

    Returns the webhook's per-alert decisions (triggered, cooldown, capped, unrouted ...). A 5xx is
    retried by Airflow (the webhook asks to retry when Airflow's database is busy); a 4xx fails at once.

    :param entries: the alert entries (templated; usually :class:`PrometheusFindingsOperator`'s output).
    :param http_conn_id: the webhook connection (conn type ``http``; the token is its password).
    :param endpoint: the webhook's path on the API server.
    :param forward: post at all (templated); off reports what would be posted.
    """

    template_fields: Sequence[str] = ("entries", "forward")

    def __init__(
        self,
        *,
        entries: Any,
        http_conn_id: str = WEBHOOK_CONN_ID,
        endpoint: str = "/pitcrew/alerts",
        forward: bool | str = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.entries, self.http_conn_id, self.endpoint, self.forward = (
            entries,
            http_conn_id,
            endpoint,
            forward,
        )

    @retry_only_transient
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.providers.http.hooks.http import HttpHook

        from pitcrew.alerts.client import auth_headers
        from pitcrew.alerts.watch import forward

        entries = list(self.entries or [])
        if not entries or not as_bool(self.forward, "forward"):
            self.log.info("not posting %d finding(s)", len(entries))
            return []
        hook = HttpHook(method="POST", http_conn_id=self.http_conn_id)
        token = hook.get_connection(self.http_conn_id).password
        if not token:
            raise ValueError(
                f"connection {self.http_conn_id!r} has no password: set the webhook's bearer token"
            )

        def post(body: bytes) -> requests.Response:
            return hook.run_with_advanced_retry(
                POST_RETRY, endpoint=self.endpoint, data=body, headers=auth_headers(body, token),
                extra_options={"check_response": False, "timeout": 30},
            )  # fmt: skip

        outcomes = forward(entries, post)
        self.log.info("webhook decisions: %s", [o.get("decision") for o in outcomes])
        return outcomes
