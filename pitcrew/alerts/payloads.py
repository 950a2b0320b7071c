"""Webhook payload models: Prometheus Alertmanager (version 4) and Grafana unified alerting (version 1).

The format is detected from the body, not configured: Grafana's payload carries ``orgId`` (Alertmanager's
never does). Both are reduced to :class:`Alert`, the one shape routing and the policy understand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from pitcrew.alerts.errors import PayloadError

#: ``receiver`` the pitcrew_watch poller puts into its Alertmanager-format posts, so its alerts are
#: recorded with source "pitcrew_watch" while passing the same auth, routing and policy.
WATCH_RECEIVER = "pitcrew_watch"

Status = Literal["firing", "resolved"]
_Labels = dict[str, str]


class _Strict(BaseModel):
    # Unknown keys are tolerated (senders add fields across versions); known keys are typed.
    model_config = ConfigDict(extra="ignore", str_max_length=4096)


class AlertmanagerAlert(_Strict):
    status: Status
    labels: _Labels
    annotations: _Labels = Field(default_factory=dict)
    # Aware only: a naive time means nothing across machines, and later steps compare it with aware ones.
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_-]+$")

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, value: _Labels) -> _Labels:
        if not value.get("alertname"):
            raise ValueError("an alert needs a non-empty 'alertname' label")
        return value


class AlertmanagerWebhook(_Strict):
    """Alertmanager's webhook body (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

    version: Literal["4"]
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0)
    status: Status
    receiver: str = ""
    groupLabels: _Labels = Field(default_factory=dict)
    commonLabels: _Labels = Field(default_factory=dict)
    commonAnnotations: _Labels = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=1000)


class GrafanaAlert(AlertmanagerAlert):
    values: dict[str, float | None] | None = None
    silenceURL: str = ""
    dashboardURL: str = ""
    panelURL: str = ""
    imageURL: str = ""


class GrafanaWebhook(_Strict):
    """Grafana unified alerting's webhook body (docs: alerting/.../integrations/webhook-notifier)."""

    version: Literal["1"]
    orgId: int
    receiver: str = ""
    status: Status
    alerts: list[GrafanaAlert] = Field(min_length=1, max_length=1000)
    groupLabels: _Labels = Field(default_factory=dict)
    commonLabels: _Labels = Field(default_factory=dict)
    commonAnnotations: _Labels = Field(default_factory=dict)
    externalURL: str = ""
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0)


@dataclass(frozen=True)
class Alert:
    """One alert, whatever sent it."""

    name: str
    status: Status
    labels: dict[str, str]
    fingerprint: str
    starts_at: datetime
    source: str
    annotations: dict[str, str] = field(default_factory=dict)

    def as_conf(self) -> dict[str, Any]:
        """The ``alert`` entry of a maintenance run's conf (JSON-safe)."""
        return {
            "name": self.name,
            "labels": dict(self.labels),
            "fingerprint": self.fingerprint,
            "starts_at": self.starts_at.isoformat(),
            "source": self.source,
        }


def _to_alerts(alerts: list[AlertmanagerAlert], source: str) -> list[Alert]:
    return [
        Alert(
            name=a.labels["alertname"],
            status=a.status,
            labels=dict(a.labels),
            fingerprint=a.fingerprint,
            starts_at=a.startsAt,
            source=source,
            annotations=dict(a.annotations),
        )
        for a in alerts
    ]


#: Validation errors that make the request itself malformed (HTTP 400) rather than a schema mismatch (422).
_BAD_REQUEST_ERRORS = frozenset({"timezone_aware"})


def _first_error(exc: ValidationError) -> tuple[str, int]:
    """The first error, as ``"<field path>: <message>"``, and its HTTP status."""
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    message = f"{where}: {err['msg']}"
    if err["type"] == "timezone_aware":
        message += " (the timestamp has no timezone: end it with 'Z' or an offset such as '+00:00')"
    return message, 400 if err["type"] in _BAD_REQUEST_ERRORS else 422


def parse_payload(body: bytes) -> tuple[str, list[Alert]]:
    """Detect the format of a webhook body and return ``(format, alerts)``.

    :raises PayloadError: status 400 for a body that is not a JSON object or a timestamp without a
        timezone, 422 for a wrong schema or an unknown version; the message names the field.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadError(f"body is not valid JSON: {type(exc).__name__}", status=400) from None
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object, got {type(data).__name__}", status=400)
    version = data.get("version")
    if "orgId" in data:
        if version != "1":
            raise PayloadError(f"unsupported Grafana webhook version {version!r}; expected '1'")
        model: type[AlertmanagerWebhook] | type[GrafanaWebhook] = GrafanaWebhook
        fmt = "grafana"
    else:
        if version != "4":
            raise PayloadError(f"unsupported Alertmanager webhook version {version!r}; expected '4'")
        model = AlertmanagerWebhook
        fmt = "alertmanager"
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        message, status = _first_error(exc)
        raise PayloadError(f"invalid {fmt} payload: {message}", status=status) from None
    source = fmt
    if fmt == "alertmanager" and parsed.receiver == WATCH_RECEIVER:
        source = WATCH_RECEIVER
    return fmt, _to_alerts(list(parsed.alerts), source)
