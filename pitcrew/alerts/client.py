"""Build and sign webhook bodies the way Alertmanager and Grafana do: used by the poller, the benchmark and tests."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pitcrew.alerts.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_body
from pitcrew.alerts.fingerprint import labels_fingerprint


def alert_entry(
    labels: Mapping[str, str],
    *,
    status: str = "firing",
    starts_at: datetime | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One alert of an Alertmanager v4 body; the fingerprint is Alertmanager's for these labels."""
    if "alertname" not in labels:
        raise ValueError("labels must contain 'alertname'")
    started = starts_at or datetime.now(UTC)
    return {
        "status": status,
        "labels": dict(labels),
        "annotations": dict(annotations or {}),
        "startsAt": started.isoformat(),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": labels_fingerprint(labels),
    }


def alertmanager_body(entries: Sequence[dict[str, Any]], *, receiver: str = "pitcrew") -> bytes:
    """An Alertmanager webhook (version 4) body carrying ``entries``."""
    firing = any(e["status"] == "firing" for e in entries)
    common = dict(entries[0]["labels"]) if entries else {}
    for entry in entries[1:]:
        common = {k: v for k, v in common.items() if entry["labels"].get(k) == v}
    payload = {
        "version": "4",
        "groupKey": json.dumps(common, sort_keys=True),
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": list(entries),
    }
    return json.dumps(payload).encode()


def auth_headers(body: bytes, token: str, hmac_secret: str | None = None) -> dict[str, str]:
    """Bearer token, and Grafana-style signature headers when a secret is given.

    The signature is always timestamped: the webhook refuses one without a timestamp (it would never expire).
    """
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if hmac_secret:
        timestamp = str(int(time.time()))
        headers[SIGNATURE_HEADER] = sign_body(hmac_secret, body, timestamp)
        headers[TIMESTAMP_HEADER] = timestamp
    return headers
