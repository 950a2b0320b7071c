"""CanaryTrigger: the canary analysis run asynchronously against a (tiny, real) Prometheus HTTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from airflow.sdk.module_loading import import_string

from operators.canary_trigger import CanaryTrigger, inconclusive
from tests.stack_fixtures import free_ports
from tests.unit.conftest import FakePrometheus, sample

ERRORS = {"name": "failure_ratio", "query": "errors", "max_value": 0.01}
CONFIDENCE = {"name": "mean_confidence", "query": "confidence", "min_value": 0.6}
CONN_ID = "canary_prom"


def _policy(**overrides: Any) -> dict[str, Any]:
    return {"initial_delay_s": 0.0, "interval_s": 0.01, "count": 3, "failure_limit": 0, "inconclusive_limit": 0,
            **overrides}  # fmt: skip


def _connect(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "prometheus", **fields}))


def _events(trigger: CanaryTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    events = asyncio.run(collect())
    json.dumps(events, allow_nan=False)  # a trigger event is stored as JSON
    return events


def _verdict(trigger: CanaryTrigger) -> dict[str, Any]:
    (event,) = _events(trigger)
    assert event["status"] == "success", event
    return event["result"]


def _sequence(*answers: Any):
    """Answers one after another (the last repeated)."""
    remaining = list(answers)
    return lambda: remaining.pop(0) if len(remaining) > 1 else remaining[0]


class TestCanaryTrigger:
    def test_serialize_round_trip(self) -> None:
        trigger = CanaryTrigger([ERRORS, CONFIDENCE], _policy(count=5), prometheus_conn_id="prom_eu")
        classpath, kwargs = trigger.serialize()
        assert classpath == "operators.canary_trigger.CanaryTrigger"
        assert kwargs == {
            "metrics": [ERRORS, CONFIDENCE],
            "policy": _policy(count=5),
            "prometheus_conn_id": "prom_eu",
        }
        json.dumps(kwargs)
        rebuilt = import_string(classpath)(**kwargs)
        assert isinstance(rebuilt, CanaryTrigger) and rebuilt.serialize() == (classpath, kwargs)

    def test_default_connection(self) -> None:
        assert CanaryTrigger([ERRORS], _policy()).serialize()[1]["prometheus_conn_id"] == "prometheus_default"

    def test_successful_after_count_rounds(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        _connect(monkeypatch, host=prometheus.url)
        prometheus.answers["errors"] = [sample({"model": "textclf"}, 0.0)]
        prometheus.answers["confidence"] = [sample({"model": "textclf"}, 0.8)]
        verdict = _verdict(CanaryTrigger([ERRORS, CONFIDENCE], _policy(count=3), CONN_ID))
        assert verdict["phase"] == "successful"
        assert prometheus.queries == ["errors", "confidence"] * 3
        assert [(m["metric"], m["values"], m["phase"]) for m in verdict["measurements"]] == [
            ("failure_ratio", [0.0], "successful"), ("mean_confidence", [0.8], "successful")
        ] * 3  # fmt: skip

    def test_fails_early_once_the_failure_limit_is_exceeded(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        _connect(monkeypatch, host=prometheus.url)
        prometheus.answers["errors"] = _sequence([sample({}, 0.0)], [sample({}, 0.2)], [sample({}, 0.3)])
        prometheus.answers["confidence"] = [sample({}, 0.8)]
        verdict = _verdict(CanaryTrigger([ERRORS, CONFIDENCE], _policy(count=6, failure_limit=1), CONN_ID))
        assert verdict["phase"] == "failed"
        assert "failure_ratio" in verdict["reason"] and "failure limit 1" in verdict["reason"]
        # Round 1 both, round 2 both (one failure, within the limit), round 3 stops at the second failure.
        assert prometheus.queries == ["errors", "confidence", "errors", "confidence", "errors"]

    def test_breach_within_the_failure_limit_passes(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        _connect(monkeypatch, host=prometheus.url)
        prometheus.answers["errors"] = _sequence([sample({}, 0.2)], [sample({}, 0.0)])
        verdict = _verdict(CanaryTrigger([ERRORS], _policy(count=3, failure_limit=1), CONN_ID))
        assert verdict["phase"] == "successful" and len(prometheus.queries) == 3

    def test_no_series_or_nan_is_inconclusive(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        _connect(monkeypatch, host=prometheus.url)
        prometheus.answers["errors"] = _sequence([], [sample({}, float("nan"))])
        verdict = _verdict(CanaryTrigger([ERRORS], _policy(count=2), CONN_ID))
        assert verdict["phase"] == "inconclusive" and "human" in verdict["reason"]
        assert [m["values"] for m in verdict["measurements"]] == [[], [None]]  # NaN as JSON null

    def test_unreachable_prometheus_is_inconclusive(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connect(monkeypatch, host="127.0.0.1", port=free_ports(1)[0])
        verdict = _verdict(CanaryTrigger([ERRORS, CONFIDENCE], _policy(count=2), CONN_ID))
        assert verdict["phase"] == "inconclusive"
        assert [m["phase"] for m in verdict["measurements"]] == ["inconclusive"] * 4

    @pytest.mark.parametrize(
        "answer",
        [(400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
         (503, {"status": "error", "error": "restarting"}),
         (200, {"status": "success", "data": {"resultType": "scalar", "result": [1700000000.0, "0"]}})],
        ids=["refused", "unavailable", "scalar"],
    )  # fmt: skip
    def test_unanswered_query_is_inconclusive_never_a_pass(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus, answer: tuple[int, dict]
    ) -> None:
        _connect(monkeypatch, host=prometheus.url)
        prometheus.answers["errors"] = answer
        verdict = _verdict(CanaryTrigger([ERRORS], _policy(count=2), CONN_ID))
        assert verdict["phase"] == "inconclusive"
        assert prometheus.queries == ["errors", "errors"]

    def test_initial_delay_and_interval_are_honoured(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        _connect(monkeypatch, host=prometheus.url)
        asked: list[float] = []

        def answer() -> list[dict[str, Any]]:
            asked.append(time.monotonic())
            return [sample({}, 0.0)]

        prometheus.answers["errors"] = answer
        started = time.monotonic()
        verdict = _verdict(
            CanaryTrigger([ERRORS], _policy(initial_delay_s=0.3, interval_s=0.2, count=3), CONN_ID)
        )
        assert verdict["phase"] == "successful" and len(asked) == 3
        assert asked[0] - started >= 0.3
        assert all(later - earlier >= 0.19 for earlier, later in zip(asked, asked[1:], strict=False))
        assert asked[-1] - started < 0.3 + 2 * 0.2 + 2.0

    def test_connection_credentials_and_headers_are_sent(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        _connect(monkeypatch, host=prometheus.url, login="reader", password="s3cret",
                 extra={"headers": {"X-Scope-OrgID": "team-a"}})  # fmt: skip
        prometheus.answers["errors"] = [sample({}, 0.0)]
        assert _verdict(CanaryTrigger([ERRORS], _policy(count=1), CONN_ID))["phase"] == "successful"
        (headers,) = prometheus.headers
        assert headers["authorization"] == "Basic " + base64.b64encode(b"reader:s3cret").decode()
        assert headers["x-scope-orgid"] == "team-a"

    def test_missing_connection_is_an_error_event(self) -> None:
        (event,) = _events(CanaryTrigger([ERRORS], _policy(), "pitcrew_no_such_prometheus"))
        assert event["status"] == "error"
        assert "pitcrew_no_such_prometheus" in event["message"]

    def test_connection_without_host_is_an_error_event(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connect(monkeypatch, port=9090)
        (event,) = _events(CanaryTrigger([ERRORS], _policy(), CONN_ID))
        assert event == {"status": "error", "message": f"ValueError: connection {CONN_ID!r} has no host: "
                                                       "set Prometheus's address"}  # fmt: skip

    def test_invalid_analysis_is_an_error_event(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connect(monkeypatch, host="127.0.0.1", port=9090)
        (event,) = _events(CanaryTrigger([{"name": "x", "query": "q"}], _policy(), CONN_ID))
        assert event["status"] == "error" and "exactly one of max_value or min_value" in event["message"]


def test_inconclusive_verdict_names_its_reason() -> None:
    assert inconclusive("the triggerer died") == {
        "phase": "inconclusive", "reason": "the triggerer died", "measurements": []
    }  # fmt: skip
