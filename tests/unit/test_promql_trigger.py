from __future__ import annotations

import asyncio
from typing import Any

import pytest

from operators.promql_trigger import PromQLTrigger
from tests.unit.test_prometheus_hook import FakePrometheus, prometheus, sample  # noqa: F401  (fixture)


def _events(trigger: PromQLTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


class TestPromQLTrigger:
    def test_serialization_round_trip(self) -> None:
        trigger = PromQLTrigger(url="http://p:9090", query="up == 0", poll_interval_s=2.0, timeout_s=30.0)
        path, kwargs = trigger.serialize()
        assert path == "operators.promql_trigger.PromQLTrigger"
        assert kwargs == {"url": "http://p:9090", "query": "up == 0", "poll_interval_s": 2.0, "timeout_s": 30.0}
        assert PromQLTrigger(**kwargs).serialize() == (path, kwargs)

    def test_success_once_the_query_returns_samples(self, prometheus: FakePrometheus) -> None:  # noqa: F811
        answers = iter([[], [], [sample({"model": "textclf"}, 0.2)]])
        prometheus.answers["x > 0.1"] = lambda: next(answers)
        (event,) = _events(PromQLTrigger(prometheus.url, "x > 0.1", poll_interval_s=0.01, timeout_s=10))
        assert event["status"] == "success"
        assert event["result"] == [sample({"model": "textclf"}, 0.2)]
        assert len(prometheus.queries) == 3

    def test_timeout_when_condition_never_holds(self, prometheus: FakePrometheus) -> None:  # noqa: F811
        (event,) = _events(PromQLTrigger(prometheus.url, "never", poll_interval_s=0.01, timeout_s=0.1))
        assert event["status"] == "timeout"

    def test_bad_query_is_an_error_event(self, prometheus: FakePrometheus) -> None:  # noqa: F811
        prometheus.answers["bad("] = (400, {"status": "error", "error": "parse error at char 5"})
        (event,) = _events(PromQLTrigger(prometheus.url, "bad(", poll_interval_s=0.01, timeout_s=10))
        assert event["status"] == "error" and "parse error" in event["message"]

    def test_unavailable_prometheus_is_retried(self, prometheus: FakePrometheus) -> None:  # noqa: F811
        answers = iter([(503, {"status": "error"}), [sample({}, 1)]])
        prometheus.answers["q"] = lambda: next(answers)
        (event,) = _events(PromQLTrigger(prometheus.url, "q", poll_interval_s=0.01, timeout_s=10))
        assert event["status"] == "success"

    @pytest.mark.parametrize("port", [1])
    def test_unreachable_prometheus_times_out(self, port: int) -> None:
        (event,) = _events(PromQLTrigger(f"http://127.0.0.1:{port}", "q", poll_interval_s=0.01, timeout_s=0.2))
        assert event["status"] == "timeout"
