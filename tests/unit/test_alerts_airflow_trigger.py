from __future__ import annotations

from typing import Any

import pytest
from airflow.exceptions import DagNotFound
from sqlalchemy.exc import OperationalError

import pitcrew.alerts.airflow_trigger as airflow_trigger
from pitcrew.alerts.errors import TriggerRejected, TriggerUnavailable


class FakeRun:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


class TestTriggerRun:
    @pytest.fixture(autouse=True)
    def _no_sleep(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(airflow_trigger, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))

    def _patch(self, monkeypatch: pytest.MonkeyPatch, outcomes: list[Any]) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []

        def fake_trigger_dag(dag_id: str, **kwargs: Any) -> FakeRun:
            calls.append({"dag_id": dag_id, **kwargs})
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return FakeRun(kwargs["run_id"])

        monkeypatch.setattr("airflow.api.common.trigger_dag.trigger_dag", fake_trigger_dag)
        return calls

    def test_creates_manual_run_marked_as_webhook(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls = self._patch(monkeypatch, ["ok"])
        assert airflow_trigger.trigger_run("dag", "alert__x", {"model": "m"}) == "alert__x"
        (call,) = calls
        assert call["conf"] == {"model": "m"}
        assert call["triggering_user_name"] == "pitcrew-webhook"
        assert call["triggered_by"].value == "rest_api"

    def test_locked_database_is_retried(self, monkeypatch: pytest.MonkeyPatch) -> None:
        locked = OperationalError("INSERT", {}, Exception("database is locked"))
        calls = self._patch(monkeypatch, [locked, locked, "ok"])
        assert airflow_trigger.trigger_run("dag", "r1", {}) == "r1"
        assert len(calls) == 3

    def test_still_locked_after_retries_is_unavailable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        locked = OperationalError("INSERT", {}, Exception("database is locked"))
        calls = self._patch(monkeypatch, [locked] * 4)
        with pytest.raises(TriggerUnavailable, match="stayed unavailable"):
            airflow_trigger.trigger_run("dag", "r1", {})
        assert len(calls) == len(airflow_trigger.RETRY_DELAYS_S) + 1

    def test_unknown_dag_is_rejected(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._patch(monkeypatch, [DagNotFound("nope")])
        with pytest.raises(TriggerRejected, match="does not exist"):
            airflow_trigger.trigger_run("nope", "r1", {})
