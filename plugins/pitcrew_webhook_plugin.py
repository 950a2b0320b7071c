"""Airflow plugin: mounts pitcrew's alert webhook app at ``/pitcrew`` on the Airflow API server.

Endpoints: ``POST /pitcrew/alerts`` (Alertmanager v4 / Grafana webhooks, each sender with its own token),
``POST /pitcrew/feedback`` (feedback labels), ``GET /pitcrew/health``, ``GET /pitcrew/metrics`` (pipeline,
feedback and accuracy metrics for Prometheus). The app authenticates its callers itself;
Airflow's own API auth is unchanged. Settings, secrets and state are read on first request, not at
import (Airflow imports plugins in every process).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from pitcrew.alerts.airflow_trigger import open_run, trigger_run
from pitcrew.alerts.service import AlertService, service_from_settings
from pitcrew.alerts.webhook import WebhookConfig, create_app
from pitcrew.feedback.ingest import FeedbackService

#: Optional Airflow connection holding the webhook secrets (password = Alertmanager's bearer token, extra
#: ``{"hmac_secret": ..., "grafana_token": ...}``), e.g. from a secrets backend or
#: ``AIRFLOW_CONN_PITCREW_WEBHOOK``; a secret it lacks (or the whole connection, when it does not exist)
#: comes from pitcrew settings (generated under ``<home>/secrets`` for the local stack).
WEBHOOK_CONN_ID = "pitcrew_webhook"
#: Optional connection whose password is the bearer token of ``POST /pitcrew/feedback`` alone; when neither it
#: nor the ``feedback_token`` setting exists, feedback takes the webhook token.
FEEDBACK_CONN_ID = "pitcrew_feedback"


def _connection(conn_id: str):
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None


def _connection_secrets() -> tuple[str, str, str]:
    """``(token, hmac_secret, grafana_token)`` of the webhook connection; empty where it has none."""
    conn = _connection(WEBHOOK_CONN_ID)
    if conn is None:
        return "", "", ""
    extra = conn.extra_dejson
    return conn.password or "", str(extra.get("hmac_secret") or ""), str(extra.get("grafana_token") or "")


def _config() -> WebhookConfig:
    from pitcrew.settings import get_settings
    from pitcrew.stack.components import grafana_token, webhook_hmac_secret, webhook_token

    settings = get_settings()
    token, secret, grafana = _connection_secrets()
    feedback_conn = _connection(FEEDBACK_CONN_ID)
    return WebhookConfig(
        token=token or webhook_token(settings),
        hmac_secret=secret or webhook_hmac_secret(settings),
        metrics_dir=settings.home_dir / "metrics",
        feedback_token=(feedback_conn.password if feedback_conn else "") or settings.feedback_token.get_secret_value(),
        grafana_token=grafana or grafana_token(settings),
    )


def _service() -> AlertService:
    # Import the run-creation path now (first request, not plugin import) so the first alert does not pay
    # for it: cold, it takes seconds on a small machine.
    import airflow.api.common.trigger_dag  # noqa: F401

    from pitcrew.settings import get_settings

    return service_from_settings(get_settings(), trigger_run, open_run)


def _feedback() -> FeedbackService:
    from pitcrew.feedback.ingest import feedback_from_settings
    from pitcrew.settings import get_settings

    return feedback_from_settings(get_settings())


class PitcrewWebhookPlugin(AirflowPlugin):
    name = "pitcrew_webhook"
    fastapi_apps = [
        {
            "app": create_app(_config, _service, _feedback),
            "url_prefix": "/pitcrew",
            "name": "pitcrew alert webhook and feedback",
        },
    ]
