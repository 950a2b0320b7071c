"""The poller's logic (DAG ``pitcrew_watch``): polled alerts and query breaches as webhook alerts.

Polled findings go through the webhook like Alertmanager's, so one policy over one state decides
(dedup, cooldown, daily cap) and Airflow runs are created in the API server. Alerts read from ``ALERTS``
keep Alertmanager's fingerprint (same labels, same hash), so an alert seen by both paths starts one run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pitcrew.alerts.client import alert_entry, alertmanager_body
from pitcrew.alerts.errors import AlertsError
from pitcrew.alerts.payloads import WATCH_RECEIVER
from pitcrew.alerts.routing import PolledQuery

#: Alerts per POST, like Alertmanager's ``max_alerts``.
BATCH_SIZE = 50


class WatchForwardError(AlertsError):
    """The webhook refused the poller's post; the message has its status and error."""


class WebhookUnavailableError(WatchForwardError):
    """The webhook answered 5xx (Airflow's database busy, say): the next try may succeed."""


def entries_from_alerts(alerts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Firing ``ALERTS`` (from PrometheusHook.firing_alerts) as webhook alert entries."""
    entries = []
    for alert in alerts:
        active = alert.get("active_at")
        starts = datetime.fromtimestamp(active, UTC) if active else None
        entries.append(alert_entry(alert["labels"], starts_at=starts))
    return entries


def entries_from_query(query: PolledQuery, samples: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each sample of a breached query as an alert named after the query (series labels kept)."""
    entries = []
    for sample in samples:
        labels = {k: v for k, v in sample["metric"].items() if k != "__name__"}
        labels.update(query.labels)
        labels["alertname"] = query.name
        entries.append(alert_entry(labels, annotations={"expr": query.expr, "value": str(sample["value"][1])}))
    return entries


def merge_findings(alerts: list[dict[str, Any]], breaches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Firing alerts first; a query breach only for a model no firing alert already names.

    A drift score over threshold is usually both a firing ``ModelDriftScoreHigh`` and a breach of the
    drift query; they have different names (so different fingerprints) and would start two runs for
    one condition. The query is the fallback for conditions no deployed rule covers.
    """
    covered = {a["labels"].get("model") for a in alerts} - {None}
    return alerts + [b for b in breaches if b["labels"].get("model") not in covered]


def forward(entries: Sequence[dict[str, Any]], post: Callable[[bytes], Any]) -> list[dict[str, Any]]:
    """POST the entries to the webhook in batches; return the per-alert outcomes it answered.

    :param post: sends one Alertmanager body (signing it) and returns the HTTP response
        (``status_code``, ``text``, ``json()``); the Airflow operator posts through ``HttpHook``.
    :raises WebhookUnavailableError: a 5xx answer (the webhook asks to retry later).
    :raises WatchForwardError: any other non-200 answer (bad token or body: a retry will not help).
    """
    outcomes: list[dict[str, Any]] = []
    for start in range(0, len(entries), BATCH_SIZE):
        body = alertmanager_body(list(entries[start : start + BATCH_SIZE]), receiver=WATCH_RECEIVER)
        response = post(body)
        if response.status_code >= 500:
            raise WebhookUnavailableError(f"webhook answered HTTP {response.status_code}: {response.text[:300]}")
        if response.status_code != 200:
            raise WatchForwardError(f"webhook answered HTTP {response.status_code}: {response.text[:300]}")
        outcomes.extend(response.json()["alerts"])
    return outcomes
