"""Typed errors of alert ingestion; the webhook maps each class to one HTTP status."""

from __future__ import annotations


class AlertsError(Exception):
    """Base class of every alert-ingestion error."""


class AuthError(AlertsError):
    """Missing or wrong bearer token, signature or timestamp (HTTP 401)."""


class PayloadError(AlertsError):
    """The body is not JSON, not a known payload format, or fails its schema (HTTP 400/422)."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class PayloadTooLarge(AlertsError):
    """The body exceeds the size limit (HTTP 413)."""


class RoutesFileError(AlertsError):
    """The routing file is missing or invalid; the message names the field."""


class TriggerUnavailable(AlertsError):
    """Airflow could not create the run right now (database locked, API down): retryable, HTTP 503.

    The sender (Alertmanager, Grafana) retries on 5xx, so the alert is not lost.
    """


class TriggerRejected(AlertsError):
    """Airflow refused the run for a reason a retry will not fix (unknown DAG, paused run type)."""
