"""Who may send what to ``POST /alerts``: each sender's token, signatures with timestamps, aware times.

The bearer token names the sender (pitcrew.alerts.auth): Alertmanager's token sends Alertmanager-format
bodies only, Grafana's token signed, timestamped Grafana-format bodies only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pitcrew.alerts.auth import sign_body
from pitcrew.alerts.client import auth_headers
from tests.alert_stack import GRAFANA_EXAMPLE
from tests.unit.conftest import GRAFANA_TOKEN, SECRET, TOKEN, RecordingTrigger, _firing, _make


class TestSenderTokens:
    """The bearer token names the sender; each sender sends its own format only (pitcrew.alerts.auth)."""

    def test_grafana_body_with_alertmanagers_token_is_401(self, client: TestClient, trigger: RecordingTrigger) -> None:
        body = json.dumps(GRAFANA_EXAMPLE).encode()
        for secret in (SECRET, None):  # even signed: the webhook token is not Grafana's credential
            response = client.post("/alerts", content=body, headers=auth_headers(body, TOKEN, secret))
            assert response.status_code == 401
            assert "needs Grafana's token" in response.json()["error"]
        assert trigger.calls == []

    def test_alertmanager_body_with_grafanas_token_is_401(
        self, client: TestClient, trigger: RecordingTrigger
    ) -> None:
        # Whoever holds Grafana's token cannot skip the signature by sending an Alertmanager-format body.
        body = _firing()
        for secret in (None, SECRET):
            response = client.post("/alerts", content=body, headers=auth_headers(body, GRAFANA_TOKEN, secret))
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        assert "Grafana-format bodies only" in response.json()["error"]
        assert trigger.calls == []

    def test_grafana_signature_without_timestamp_is_401(self, client: TestClient, trigger: RecordingTrigger) -> None:
        body = json.dumps(GRAFANA_EXAMPLE).encode()
        headers = {"Authorization": f"Bearer {GRAFANA_TOKEN}", "X-Grafana-Alerting-Signature": sign_body(SECRET, body)}
        response = client.post("/alerts", content=body, headers=headers)
        assert response.status_code == 401
        assert "x-grafana-alerting-timestamp" in response.json()["error"]
        assert trigger.calls == []

    def test_alertmanager_may_sign_but_the_signature_is_checked(
        self, client: TestClient, trigger: RecordingTrigger
    ) -> None:
        body = _firing()
        assert client.post("/alerts", content=body, headers=auth_headers(body, TOKEN, SECRET)).status_code == 200
        other = _firing("x")
        untimestamped = {"Authorization": f"Bearer {TOKEN}", "X-Grafana-Alerting-Signature": sign_body(SECRET, other)}
        response = client.post("/alerts", content=other, headers=untimestamped)
        assert response.status_code == 401
        assert "x-grafana-alerting-timestamp" in response.json()["error"]
        assert len(trigger.calls) == 1

    @pytest.mark.parametrize("grafana_token", ["", TOKEN])
    def test_no_grafana_token_closes_the_grafana_path(
        self, tmp_path: Path, trigger: RecordingTrigger, grafana_token: str
    ) -> None:
        app, _ = _make(tmp_path, trigger, grafana_token=grafana_token)
        client = TestClient(app)
        body = json.dumps(GRAFANA_EXAMPLE).encode()
        response = client.post("/alerts", content=body, headers=auth_headers(body, TOKEN, SECRET))
        assert response.status_code == 401
        assert "the Grafana path is closed" in response.json()["error"]
        # Alertmanager's path is unaffected, even when the Grafana token was set to the same value.
        firing = _firing()
        assert client.post("/alerts", content=firing, headers=auth_headers(firing, TOKEN)).status_code == 200


class TestTimestamps:
    @pytest.mark.parametrize(
        ("fmt", "field"), [("alertmanager", "startsAt"), ("alertmanager", "endsAt"), ("grafana", "startsAt")]
    )
    def test_timezone_less_time_is_400_naming_the_field(
        self, client: TestClient, trigger: RecordingTrigger, fmt: str, field: str
    ) -> None:
        if fmt == "grafana":
            alert = {**GRAFANA_EXAMPLE["alerts"][0], "labels": {"alertname": "ModelLowConfidence", "model": "textclf"}}
            data, token, secret = {**GRAFANA_EXAMPLE, "alerts": [alert]}, GRAFANA_TOKEN, SECRET
        else:
            data, token, secret = json.loads(_firing()), TOKEN, None
        data["alerts"][0][field] = "2026-03-01T12:00:00"  # no Z, no offset
        body = json.dumps(data).encode()
        response = client.post("/alerts", content=body, headers=auth_headers(body, token, secret))
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(f"invalid {fmt} payload: alerts.0.{field}: ")
        assert "timezone" in response.json()["error"]
        assert trigger.calls == []
