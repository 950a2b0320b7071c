from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from operators.promql_trigger import PromQLTrigger, query_vector
from tests.stack_fixtures import free_ports
from tests.unit.conftest import FakePrometheus, sample


def _events(trigger: PromQLTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def _query(url: str, query: str) -> list[dict[str, Any]] | None:
    async def once() -> list[dict[str, Any]] | None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            return await query_vector(client, url, query)

    return asyncio.run(once())


class TestQueryVector:
    def test_returns_the_result_vector(self, prometheus: FakePrometheus) -> None:
        prometheus.answers["up"] = [sample({"job": "triton"}, 1)]
        assert _query(prometheus.url + "/", "up") == [sample({"job": "triton"}, 1)]
        assert _query(prometheus.url, "nothing") == []
        assert prometheus.queries == ["up", "nothing"]

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_5xx_is_none_to_retry_later(self, prometheus: FakePrometheus, status: int) -> None:
        prometheus.answers["up"] = (status, {"status": "error", "error": "busy"})
        assert _query(prometheus.url, "up") is None

    def test_unreachable_is_none(self) -> None:
        assert _query(f"http://127.0.0.1:{free_ports(1)[0]}", "up") is None

    def test_refused_query_raises(self, prometheus: FakePrometheus) -> None:
        prometheus.answers["bad("] = (400, {"status": "error", "error": "parse error at char 5"})
        with pytest.raises(ValueError, match="parse error at char 5"):
            _query(prometheus.url, "bad(")

    def test_scalar_answer_raises(self, prometheus: FakePrometheus) -> None:
        prometheus.answers["1"] = (200, {"status": "success", "data": {"resultType": "scalar",
                                                                        "result": [1700000000.0, "1"]}})  # fmt: skip
        with pytest.raises(ValueError, match="instant vector"):
            _query(prometheus.url, "1")


class TestPromQLTrigger:
    def test_serialization_round_trip(self) -> None:
        trigger = PromQLTrigger(url="http://p:9090", query="up == 0", poll_interval_s=2.0, timeout_s=30.0)
        path, kwargs = trigger.serialize()
        assert path == "operators.promql_trigger.PromQLTrigger"
        assert kwargs == {
            "url": "http://p:9090",
            "query": "up == 0",
            "poll_interval_s": 2.0,
            "timeout_s": 30.0,
        }
        assert PromQLTrigger(**kwargs).serialize() == (path, kwargs)

    def test_success_once_the_query_returns_samples(self, prometheus: FakePrometheus) -> None:
        answers = iter([[], [], [sample({"model": "textclf"}, 0.2)]])
        prometheus.answers["x > 0.1"] = lambda: next(answers)
        (event,) = _events(PromQLTrigger(prometheus.url, "x > 0.1", poll_interval_s=0.01, timeout_s=10))
        assert event["status"] == "success"
        assert event["result"] == [sample({"model": "textclf"}, 0.2)]
        assert len(prometheus.queries) == 3

    def test_timeout_when_condition_never_holds(self, prometheus: FakePrometheus) -> None:
        (event,) = _events(PromQLTrigger(prometheus.url, "never", poll_interval_s=0.01, timeout_s=0.1))
        assert event["status"] == "timeout"

    def test_bad_query_is_an_error_event(self, prometheus: FakePrometheus) -> None:
        prometheus.answers["bad("] = (400, {"status": "error", "error": "parse error at char 5"})
        (event,) = _events(PromQLTrigger(prometheus.url, "bad(", poll_interval_s=0.01, timeout_s=10))
        assert event["status"] == "error" and "parse error" in event["message"]

    def test_unavailable_prometheus_is_retried(self, prometheus: FakePrometheus) -> None:
        answers = iter([(503, {"status": "error"}), [sample({}, 1)]])
        prometheus.answers["q"] = lambda: next(answers)
        (event,) = _events(PromQLTrigger(prometheus.url, "q", poll_interval_s=0.01, timeout_s=10))
        assert event["status"] == "success"

    def test_unreachable_prometheus_times_out(self) -> None:
        url = f"http://127.0.0.1:{free_ports(1)[0]}"
        (event,) = _events(PromQLTrigger(url, "q", poll_interval_s=0.01, timeout_s=0.2))
        assert event["status"] == "timeout"
