from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pitcrew.alerts.errors import TriggerRejected, TriggerUnavailable
from pitcrew.alerts.payloads import Alert
from pitcrew.alerts.policy import AlertPolicy, Limits
from pitcrew.alerts.routing import load_routes
from pitcrew.alerts.service import AlertService, service_from_settings
from pitcrew.settings import REPO_ROOT, Settings


class RecordingTrigger:
    """Stands in for Airflow: records each run it is asked to create, or fails as told."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.fail_with = fail_with

    def __call__(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append((dag_id, run_id, conf))
        return run_id


def _alert(fingerprint: str, status: str = "firing", model: str = "textclf") -> Alert:
    return Alert(
        name="TritonInferenceFailures",
        status=status,  # type: ignore[arg-type]
        labels={"alertname": "TritonInferenceFailures", "model": model},
        fingerprint=fingerprint,
        starts_at=datetime(2026, 11, 22, 1, 2, 3, tzinfo=UTC),
        source="alertmanager",
    )


def _service(tmp_path: Path, trigger: RecordingTrigger, cap: int = 3) -> AlertService:
    routes = load_routes(REPO_ROOT / "deploy" / "alert_routes.yaml")
    return AlertService(AlertPolicy(tmp_path / "state.db"), routes, {"textclf": Limits(3600, cap)}, trigger)


class TestAlertService:
    def test_firing_alert_triggers_one_run_with_alert_conf(self, tmp_path: Path) -> None:
        trigger = RecordingTrigger()
        (outcome,) = _service(tmp_path, trigger).handle([_alert("fp1")])
        assert outcome.decision == "triggered"
        ((dag_id, run_id, conf),) = trigger.calls
        assert dag_id == "pitcrew_maintenance_textclf" and outcome.run_id == run_id
        assert conf["model"] == "textclf" and conf["trigger"] == "alert"
        assert conf["alert"] == {
            "name": "TritonInferenceFailures",
            "labels": {"alertname": "TritonInferenceFailures", "model": "textclf"},
            "fingerprint": "fp1",
            "starts_at": "2026-11-22T01:02:03+00:00",
            "source": "alertmanager",
        }

    def test_resolved_unrouted_duplicate_and_capped_do_not_trigger(self, tmp_path: Path) -> None:
        trigger = RecordingTrigger()
        service = _service(tmp_path, trigger, cap=2)
        outcomes = service.handle(
            [
                _alert("a"),
                _alert("a"),
                _alert("a", status="resolved"),
                _alert("b", model="unknown"),
                _alert("c"),
                _alert("d"),
            ]
        )
        assert [o.decision for o in outcomes] == ["triggered", "cooldown", "resolved", "unrouted", "triggered", "capped"]
        assert len(trigger.calls) == 2

    def test_unavailable_airflow_releases_the_reservation(self, tmp_path: Path) -> None:
        failing = RecordingTrigger(TriggerUnavailable("db locked"))
        service = _service(tmp_path, failing)
        with pytest.raises(TriggerUnavailable):
            service.handle([_alert("fp1")])
        assert service.policy.runs() == []
        # The sender's retry then succeeds: the alert is not lost.
        service.trigger = RecordingTrigger()
        (outcome,) = service.handle([_alert("fp1")])
        assert outcome.decision == "triggered"

    def test_rejected_run_is_recorded_and_not_retried_forever(self, tmp_path: Path) -> None:
        service = _service(tmp_path, RecordingTrigger(TriggerRejected("no such DAG")))
        (outcome,) = service.handle([_alert("fp1")])
        assert outcome.decision == "rejected" and outcome.run_id is None
        assert service.policy.runs() == []
        assert service.policy.decision_counts()[("alertmanager", "textclf", "rejected")] == 1

    def test_from_settings_uses_models_file_limits(self, tmp_path: Path) -> None:
        service = service_from_settings(Settings(home=tmp_path), RecordingTrigger())
        assert service.limits["textclf"].max_runs_per_day == 3
        assert service.limits["textclf"].cooldown_s == 3600
        assert service.policy.path == tmp_path.resolve() / "alerts" / "state.db"
