from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import TaskDeferred

from operators.prometheus_hook import PrometheusHook
from operators.promql_sensor import PromQLSensor, PromQLSensorError
from operators.promql_trigger import PromQLTrigger
from tests.unit.conftest import FakePrometheus, sample


class StubHook:
    def __init__(self, results: list[list[dict]]) -> None:
        self.results = results

    def query(self, expr: str) -> list[dict]:
        return self.results.pop(0)

    def get_url(self) -> str:
        return "http://prom:9090"


@pytest.fixture
def sensor(monkeypatch: pytest.MonkeyPatch):
    def make(results: list[list[dict]], **kwargs) -> PromQLSensor:
        stub = StubHook(results)
        monkeypatch.setattr(PromQLSensor, "hook", property(lambda self: stub))
        return PromQLSensor(task_id="wait", query="x > 1", poke_interval=5, timeout=120, **kwargs)

    return make


class TestPromQLSensor:
    def test_template_fields(self) -> None:
        assert "query" in PromQLSensor.template_fields

    def test_returns_immediately_when_condition_holds(self, sensor) -> None:
        result = [{"metric": {"model": "m"}, "value": [0, "2"]}]
        assert sensor([result]).execute({}) == result

    def test_defers_to_trigger_otherwise(self, sensor) -> None:
        with pytest.raises(TaskDeferred) as info:
            sensor([[]]).execute({})
        trigger = info.value.trigger
        assert isinstance(trigger, PromQLTrigger)
        assert trigger.serialize()[1] == {"url": "http://prom:9090", "query": "x > 1", "poll_interval_s": 5.0,
                                          "timeout_s": 120.0}  # fmt: skip
        assert info.value.method_name == "execute_complete"

    def test_execute_complete(self, sensor) -> None:
        s = sensor([])
        assert s.execute_complete({}, {"status": "success", "result": [1]}) == [1]
        with pytest.raises(PromQLSensorError, match="timeout"):
            s.execute_complete({}, {"status": "timeout"})

    def test_default_connection(self) -> None:
        assert PromQLSensor(task_id="t", query="q").prometheus_conn_id == PrometheusHook.default_conn_name

    def test_against_prometheus_through_the_connection(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_PROM_SENSOR", json.dumps({"conn_type": "prometheus", "host": prometheus.url})
        )
        prometheus.answers["x > 1"] = [sample({"model": "m"}, 2)]
        sensor = PromQLSensor(task_id="wait", query="x > 1", prometheus_conn_id="prom_sensor", timeout=60)
        assert sensor.execute({}) == [sample({"model": "m"}, 2)]
        prometheus.answers["x > 1"] = []
        with pytest.raises(TaskDeferred) as info:
            sensor.execute({})
        assert info.value.trigger.url == prometheus.url
