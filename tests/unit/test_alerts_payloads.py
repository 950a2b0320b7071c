from __future__ import annotations

import json

import pytest

from pitcrew.alerts.client import alert_entry, alertmanager_body
from pitcrew.alerts.errors import PayloadError
from pitcrew.alerts.payloads import WATCH_RECEIVER, parse_payload
from tests.alert_stack import ALERTMANAGER_EXAMPLE, GRAFANA_EXAMPLE


def _body(data: object) -> bytes:
    return json.dumps(data).encode()


class TestParsePayload:
    def test_grafana_documented_example(self) -> None:
        fmt, alerts = parse_payload(_body(GRAFANA_EXAMPLE))
        assert fmt == "grafana"
        assert [a.name for a in alerts] == ["High memory usage", "High CPU usage"]
        assert alerts[0].fingerprint == "c6eadffa33fcdf37"
        assert alerts[0].source == "grafana"
        assert alerts[0].labels["zone"] == "us-1"
        assert alerts[0].starts_at.utcoffset().total_seconds() == 7200

    def test_alertmanager_example(self) -> None:
        fmt, alerts = parse_payload(_body(ALERTMANAGER_EXAMPLE))
        assert fmt == "alertmanager"
        (alert,) = alerts
        assert alert.name == "TritonInferenceFailures"
        assert alert.status == "firing"
        assert alert.source == "alertmanager"
        conf = alert.as_conf()
        assert conf == {
            "name": "TritonInferenceFailures",
            "labels": {"alertname": "TritonInferenceFailures", "model": "textclf", "severity": "warning"},
            "fingerprint": "6b3ad8b2c1d4e5f6",
            "starts_at": "2026-11-22T00:10:03.123456+00:00",
            "source": "alertmanager",
        }
        json.dumps(conf)

    def test_watch_receiver_marks_source(self) -> None:
        body = alertmanager_body([alert_entry({"alertname": "A", "model": "textclf"})], receiver=WATCH_RECEIVER)
        _, (alert,) = parse_payload(body)
        assert alert.source == WATCH_RECEIVER

    @pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"[]", b"42", b'"x"', b"null"])
    def test_not_a_json_object_is_400(self, body: bytes) -> None:
        with pytest.raises(PayloadError) as info:
            parse_payload(body)
        assert info.value.status == 400

    @pytest.mark.parametrize(
        ("change", "needle"),
        [
            ({"version": "3"}, "version '3'"),
            ({"version": None}, "version None"),
            ({"alerts": []}, "alerts"),
            ({"status": "pending"}, "status"),
            ({"alerts": [{"status": "firing", "labels": {}, "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "a"}]},
             "alertname"),
            ({"alerts": [{"status": "firing", "labels": {"alertname": 3}, "startsAt": "x", "fingerprint": "a"}]},
             "alerts.0"),
        ],
    )  # fmt: skip
    def test_wrong_schema_is_422_naming_the_field(self, change: dict, needle: str) -> None:
        with pytest.raises(PayloadError) as info:
            parse_payload(_body({**ALERTMANAGER_EXAMPLE, **change}))
        assert info.value.status == 422
        assert needle in str(info.value)

    def test_grafana_unknown_version(self) -> None:
        with pytest.raises(PayloadError, match="Grafana webhook version '2'"):
            parse_payload(_body({**GRAFANA_EXAMPLE, "version": "2"}))

    def test_fingerprint_must_be_token_characters(self) -> None:
        alert = {**ALERTMANAGER_EXAMPLE["alerts"][0], "fingerprint": "../../etc"}
        with pytest.raises(PayloadError, match="fingerprint"):
            parse_payload(_body({**ALERTMANAGER_EXAMPLE, "alerts": [alert]}))

    @pytest.mark.parametrize(
        ("example", "field"),
        [(ALERTMANAGER_EXAMPLE, "startsAt"), (ALERTMANAGER_EXAMPLE, "endsAt"), (GRAFANA_EXAMPLE, "startsAt")],
    )
    def test_timezone_less_time_is_400_naming_the_field(self, example: dict, field: str) -> None:
        # A naive time is ambiguous across machines, and later steps compare alert times with aware ones.
        alert = {**example["alerts"][0], field: "2026-11-22T00:10:03.123456"}
        with pytest.raises(PayloadError) as info:
            parse_payload(_body({**example, "alerts": [alert]}))
        assert info.value.status == 400
        assert f"alerts.0.{field}: Input should have timezone info" in str(info.value)

    @pytest.mark.parametrize("stamp", ["2026-11-22T00:10:03+05:30", "2026-11-22T00:10:03.5-07:00", 1_700_000_000])
    def test_times_with_a_timezone_are_accepted(self, stamp: object) -> None:
        alert = {**ALERTMANAGER_EXAMPLE["alerts"][0], "startsAt": stamp}
        _, (parsed,) = parse_payload(_body({**ALERTMANAGER_EXAMPLE, "alerts": [alert]}))
        assert parsed.starts_at.utcoffset() is not None
