"""Human gates on Airflow's HITL operators: what each asks, and what each answer (or the timeout) does.

Airflow's ``HITLOperator.execute`` writes the request through the task supervisor
(``upsert_hitl_detail``), which only exists inside a running task: a recorder stands in for it. On
Airflow 3.3 the task then parks in ``awaiting_input`` (``TaskAwaitingInput``); the answer, or the
scheduler's timeout sweep applying the defaults, resumes it in ``execute_complete`` with the event built
here the way ``HITLDetail.as_resume_event_payload`` builds it. MLflow is real (SQLite store, no server).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSkipException,
    DownstreamTasksSkipped,
    TaskAwaitingInput,
)
from mlflow import MlflowClient

from operators.approval_operators import (
    REQUESTED_AT_KEY,
    CanaryDecisionOperator,
    DeploymentApprovalOperator,
    RollbackApprovalOperator,
    airflow_link,
)
from operators.base import FACTS_KEY, OUTCOME_KEY
from operators.mlflow_hook import RETRY_ENV_DEFAULTS
from operators.triton_hook import TritonHook
from pitcrew import registry
from pitcrew.models_file import ModelEntry
from pitcrew.settings import get_settings
from tests.unit.operator_context import RUN_ID, context_for, in_dag, use_models

MODEL = "textclf"
LABELS = ["billing", "technical", "account", "shipping"]
BASE_URL = "https://airflow.example.com"
APPROVERS = [{"id": "ann", "name": "ann"}, {"id": "bob", "name": "bob"}]
TIMEOUT = dt.timedelta(hours=24)
EVALUATION = {
    "decision": "promote",
    "reasons": ["accuracy +0.120 on new traffic (McNemar p=0.001)", "golden set unchanged"],
    "challenger": {"eval": {"accuracy": 0.91, "macro_f1": 0.9}, "golden": {"accuracy": 0.95}},
    "champion": {"eval": {"accuracy": 0.79, "macro_f1": 0.75}, "golden": {"accuracy": 0.95}},
    "comparison": {"accuracy_gain": 0.12, "mcnemar": {"p_value": 0.001}},
}  # fmt: skip
REPLAY = {"rows": 300, "agreement": 0.82, "confidence_shift": 0.07, "label_flips": {"billing->account": 31}}
DRIFT = {
    "decision": "drift", "reason": "1 of 3 columns drifted", "report_html": "/srv/pitcrew/reports/drift.html",
    "columns": [{"column": "text.length", "drifted": True}, {"column": "text.oov_rate", "drifted": False}],
}  # fmt: skip


@pytest.fixture
def upserts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The HITL requests the operators write (Airflow's call to the task supervisor, recorded)."""
    recorded: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "airflow.providers.standard.operators.hitl.upsert_hitl_detail",
        lambda **kwargs: recorded.append(kwargs),
    )
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL + "/")
    return recorded


@pytest.fixture
def mlflow_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """The ``mlflow_default`` connection's URI, and a models file naming MODEL (no store created yet)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # MLflow's default ./mlruns artifact root
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": uri}))
    for name, value in RETRY_ENV_DEFAULTS.items():  # the hook sets them; restored after the test
        monkeypatch.setenv(name, value)
    entry = ModelEntry(
        name=MODEL, train_data=str(tmp_path / "train.parquet"), inference_log=str(tmp_path / "log"),
        feedback=str(tmp_path / "fb"), labels=LABELS,
    )  # fmt: skip
    use_models(monkeypatch, tmp_path, entry)
    yield uri
    get_settings.cache_clear()


@pytest.fixture
def mlflow(mlflow_uri: str, mlflow_template: Path, tmp_path: Path) -> MlflowClient:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What Triton serves, as the hook reports it; the models asked about are recorded."""
    asked: list[str] = []

    def serving_version(hook: TritonHook, model: str) -> int:
        asked.append(model)
        return 2

    monkeypatch.setattr(TritonHook, "serving_version", serving_version)
    return asked


def _event(chosen: str, *, at: dt.datetime, by: dict | None = APPROVERS[0], timedout: bool = False) -> dict:
    """The resume event a response (or the timeout sweep applying the defaults) gives ``execute_complete``."""
    return {"chosen_options": [chosen], "params_input": {}, "responded_at": at, "responded_by_user": by,
            "timedout": timedout}  # fmt: skip


class RecordingNotifier:
    """A HITL notifier that notes what it was told: waiting (Airflow calls it), timed out (pitcrew does)."""

    def __init__(self) -> None:
        self.told: list[str] = []

    def __call__(self, context: Any) -> None:
        self.told.append("waiting")

    def timed_out(self, context: Any) -> None:
        self.told.append("timed out")


def _with_task(context: dict[str, Any]) -> dict[str, Any]:
    """Branching reads ``ti.task`` (a RuntimeTaskInstance has it)."""
    context["ti"].task = context["task"]
    return context


class TestAirflowLink:
    def test_run_page_under_the_configured_base_url(self, upserts: list) -> None:
        task = in_dag(lambda: CanaryDecisionOperator(task_id="canary_decision"), "promote", "rollback")
        assert airflow_link(context_for(task)) == f"{BASE_URL}/dags/test_dag/runs/{RUN_ID}"


class TestDeploymentApprovalOperator:
    @staticmethod
    def _task(**kwargs: Any) -> DeploymentApprovalOperator:
        arguments = {
            "task_id": "approval", "model": MODEL, "version": "2", "parent_version": "1", "evaluation": EVALUATION,
            "replay": REPLAY, "drift": DRIFT, "assigned_users": APPROVERS, "response_timeout": TIMEOUT, **kwargs,
        }  # fmt: skip
        return in_dag(lambda: DeploymentApprovalOperator(**arguments), "hot_swap")

    def test_no_answer_in_time_is_a_rejection(self) -> None:
        task = self._task()
        assert (task.options, task.defaults, task.subject) == (
            ["Approve", "Reject"], ["Reject"], f"Deploy a new version of {MODEL}?"
        )  # fmt: skip

    @pytest.mark.parametrize("dry_run", [True, "True", "true"])
    def test_dry_run_asks_nobody_and_ends_the_run(self, upserts: list, dry_run: Any) -> None:
        task = self._task(dry_run=dry_run)
        context = context_for(task)
        with pytest.raises(AirflowSkipException, match="dry run"):
            task.execute(context)
        assert upserts == []
        assert context["ti"].pushed(OUTCOME_KEY) == "dry_run"
        assert context["ti"].pushed(REQUESTED_AT_KEY) is None

    def test_asks_the_approvers_with_the_evidence(
        self, upserts: list, mlflow: MlflowClient, mlflow_uri: str, tmp_path: Path
    ) -> None:
        v1, v2 = TestRollbackApprovalOperator._versions(mlflow, tmp_path, 2)
        registry.set_version_tags(mlflow, MODEL, v1, {"rejected_by": "bob", "rejection_reason": "rejected by bob",
                                                      "rejected_at": "2026-11-30T10:00:00Z"})  # fmt: skip
        task = self._task(dry_run="False")
        context = context_for(task, params={"trigger": "alert", "alert": {"name": "ModelLowConfidence",
                                                                           "source": "alertmanager"}})  # fmt: skip
        before = dt.datetime.now(dt.UTC)
        with pytest.raises(TaskAwaitingInput) as parked:
            task.execute(context)
        assert (parked.value.method_name, parked.value.timeout) == ("execute_complete", TIMEOUT)

        (request,) = upserts
        assert request["ti_id"] == context["ti"].id
        assert request["options"] == ["Approve", "Reject"]
        assert request["defaults"] == ["Reject"]
        assert request["assigned_users"] == APPROVERS
        assert request["subject"] == f"Deploy a new version of {MODEL}?"
        body = request["body"]
        assert f"Deploy `{MODEL}` version 2 (replacing 1)" in body
        assert "**Why this run:** alert `ModelLowConfidence` (alertmanager)" in body
        assert "- v1 rejected (rejected by bob, 2026-11-30T10:00:00Z)" in body
        assert "| accuracy, new traffic hold-out | 0.790 | 0.910 |" in body
        assert "| macro-F1, new traffic | 0.750 | 0.900 |" in body
        assert "**Gate:** promote" in body
        assert "**Replay of 300 logged requests** (compared with the champion):" in body
        assert "- agreement: 0.820\n" in body and "billing → account 31" in body
        assert "**Drift:** drift — 1 of 3 columns drifted" in body
        assert "drifted columns: text.length\n" in body
        assert f"[Airflow run]({BASE_URL}/dags/test_dag/runs/{RUN_ID})" in body
        assert f"[MLflow version]({mlflow_uri}/#/models/{MODEL}/versions/2)" in body
        # Reports are the version run's artifacts on the tracking server, never a path on the worker.
        run_id = registry.get_version(mlflow, MODEL, v2).run_id
        assert f"[drift report]({mlflow_uri}/get-artifact?path=reports%2Fdrift.html&run_uuid={run_id})" in body
        assert f"[replay details]({mlflow_uri}/get-artifact?path=reports%2Freplay.json&run_uuid={run_id})" in body
        assert "file://" not in body
        assert mlflow.download_artifacts(run_id, "reports/replay.json", str(tmp_path)).endswith("replay.json")

        asked = dt.datetime.fromisoformat(context["ti"].pushed(REQUESTED_AT_KEY))
        assert before <= asked <= dt.datetime.now(dt.UTC)
        assert context["ti"].pushed(OUTCOME_KEY) is None

    def test_rendered_text_inputs_and_no_drift_check(
        self, upserts: list, mlflow: MlflowClient, tmp_path: Path
    ) -> None:
        TestRollbackApprovalOperator._versions(mlflow, tmp_path, 2)
        task = self._task(evaluation=str(EVALUATION), replay=str(REPLAY), drift="None", parent_version="None")
        with pytest.raises(TaskAwaitingInput):
            task.execute(context_for(task))
        body = upserts[0]["body"]
        assert "version 2 (replacing nothing)" in body
        assert "| accuracy, golden set | 0.950 | 0.950 |" in body
        assert "**Drift:**" not in body and "drift report" not in body

    def test_a_rejection_is_tagged_on_the_version_and_a_timeout_is_notified(
        self, mlflow: MlflowClient, tmp_path: Path
    ) -> None:
        TestRollbackApprovalOperator._versions(mlflow, tmp_path, 2)
        recorder = RecordingNotifier()
        told = recorder.told
        task = self._task(notifiers=[recorder])
        at = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
        with pytest.raises(DownstreamTasksSkipped):
            task.execute_complete(context_for(task), _event("Reject", at=at))
        tags = registry.get_version(mlflow, MODEL, 2).tags
        assert (tags["rejected_by"], tags["rejection_reason"]) == ("ann", "rejected by ann")
        assert tags["rejected_at"] == str(at) and tags["airflow_dag_run_id"] == RUN_ID
        assert told == [], "an answer by a person is not a timeout"

        context = context_for(task)
        with pytest.raises(DownstreamTasksSkipped):
            task.execute_complete(context, _event("Reject", at=at + TIMEOUT, by=None, timedout=True))
        tags = registry.get_version(mlflow, MODEL, 2).tags
        assert tags["rejected_by"] == "timeout" and "no answer within 1 day" in tags["rejection_reason"]
        assert context["ti"].pushed("pitcrew_outcome_reason") == tags["rejection_reason"]
        assert told == ["timed out"]

    def test_approve_returns_the_answer_and_reports_the_wait(self) -> None:
        task = self._task()
        context = context_for(task)
        answered = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
        context["ti"].xcom_push(REQUESTED_AT_KEY, (answered - dt.timedelta(minutes=25)).isoformat())
        result = task.execute_complete(context, _event("Approve", at=answered))
        assert result["chosen_options"] == ["Approve"]
        assert result["responded_by_user"] == {"id": "ann", "name": "ann"}
        assert result["responded_at"] == answered
        assert context["ti"].pushed(FACTS_KEY) == {"approval_wait_s": 1500.0}
        assert context["ti"].pushed(OUTCOME_KEY) is None

    def test_reject_ends_the_run_as_rejected_by_human(self) -> None:
        task = self._task()
        context = context_for(task)
        answered = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
        context["ti"].xcom_push(REQUESTED_AT_KEY, (answered - dt.timedelta(seconds=90)).isoformat())
        with pytest.raises(DownstreamTasksSkipped) as skipped:
            task.execute_complete(context, _event("Reject", at=answered))
        assert skipped.value.tasks == ["hot_swap"]
        assert context["ti"].pushed(OUTCOME_KEY) == "rejected_by_human"
        assert context["ti"].pushed(FACTS_KEY) == {"approval_wait_s": 90.0}

    def test_timeout_applies_the_default_rejection(self) -> None:
        task = self._task()
        context = context_for(task)
        asked = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        context["ti"].xcom_push(REQUESTED_AT_KEY, asked.isoformat())
        event = _event(task.defaults[0], at=asked + TIMEOUT, by=None, timedout=True)
        with pytest.raises(DownstreamTasksSkipped) as skipped:
            task.execute_complete(context, event)
        assert skipped.value.tasks == ["hot_swap"]
        assert context["ti"].pushed(OUTCOME_KEY) == "rejected_by_human"
        assert context["ti"].pushed(FACTS_KEY) == {"approval_wait_s": TIMEOUT.total_seconds()}

    def test_no_request_time_no_wait_reported(self) -> None:
        task = self._task()
        context = context_for(task)
        task.execute_complete(context, _event("Approve", at=dt.datetime.now(dt.UTC)))
        assert context["ti"].pushed(FACTS_KEY) is None


class TestRollbackApprovalOperator:
    @staticmethod
    def _task() -> RollbackApprovalOperator:
        return in_dag(
            lambda: RollbackApprovalOperator(
                task_id="approval", model=MODEL, assigned_users=APPROVERS, response_timeout=TIMEOUT
            ),
            "restore",
        )

    @staticmethod
    def _versions(client: MlflowClient, tmp_path: Path, count: int) -> list[int]:
        versions = []
        for i in range(1, count + 1):
            folder = tmp_path / f"serving-{i}"
            folder.mkdir()
            (folder / "model.onnx").write_bytes(f"onnx-{i}".encode())
            versions.append(registry.register_version(client, MODEL, serving_dir=folder).version)
        return versions

    def test_no_answer_in_time_changes_nothing(self) -> None:
        task = self._task()
        assert (task.defaults, task.subject) == (["Reject"], f"Roll {MODEL} back to the previous champion?")

    def test_shows_what_would_be_restored_and_offers_it(
        self, upserts: list, mlflow: MlflowClient, serving: list, tmp_path: Path
    ) -> None:
        v1, v2 = self._versions(mlflow, tmp_path, 2)
        registry.promote(mlflow, MODEL, v1, approver="ann")
        registry.promote(mlflow, MODEL, v2, approver="bob")
        promoted_at = registry.get_version(mlflow, MODEL, v1).tags["promoted_at"]
        task = self._task()
        context = context_for(task)
        with pytest.raises(TaskAwaitingInput):
            task.execute(context)

        assert serving == [MODEL]
        assert context["ti"].pushed("previous") == v1
        (request,) = upserts
        assert (request["options"], request["defaults"]) == (["Approve", "Reject"], ["Reject"])
        assert request["assigned_users"] == APPROVERS
        body = request["body"]
        assert f"### Roll `{MODEL}` back to version {v1}" in body
        assert f"Triton serves version **2** now; MLflow champion is **{v2}**." in body
        assert f"Version {v1} was promoted at {promoted_at} (approved by ann)" in body
        assert f"MLflow `champion` → {v1} and `previous` → {v2}" in body
        assert f"[run]({BASE_URL}/dags/test_dag/runs/{RUN_ID})" in body

    def test_nothing_to_roll_back_to_fails_without_asking(
        self, upserts: list, mlflow: MlflowClient, serving: list, tmp_path: Path
    ) -> None:
        (v1,) = self._versions(mlflow, tmp_path, 1)
        registry.promote(mlflow, MODEL, v1, approver="ann")
        task = self._task()
        context = context_for(task)
        with pytest.raises(AirflowFailException, match="has no 'previous' version"):
            task.execute(context)
        assert upserts == [] and serving == []
        assert context["ti"].pushed("previous") is None

    def test_reject_skips_the_restore(self) -> None:
        task = self._task()
        with pytest.raises(DownstreamTasksSkipped) as skipped:
            task.execute_complete(context_for(task), _event("Reject", at=dt.datetime.now(dt.UTC)))
        assert skipped.value.tasks == ["restore"]


class TestCanaryDecisionOperator:
    INCONCLUSIVE = {
        "phase": "inconclusive",
        "reason": "3 of 4 measurements had no data: a human must decide",
        "measurements": [
            {"metric": "failure_ratio", "values": [None], "phase": "inconclusive"},
            {"metric": "p99_latency_seconds", "values": [0.041], "phase": "successful"},
        ],
        "metrics": [
            {"name": "failure_ratio", "query": "sum(increase(nv_inference_request_failure[1m]))",
             "max_value": 0.01, "min_value": None},
            {"name": "p99_latency_seconds", "query": "max(nv_inference_request_summary_us) / 1e6",
             "max_value": 1.0, "min_value": None},
        ],
        "prometheus_url": "http://prom:9090",
    }  # fmt: skip

    @staticmethod
    def _task(**kwargs: Any) -> CanaryDecisionOperator:
        return in_dag(
            lambda: CanaryDecisionOperator(task_id="canary_decision", assigned_users=APPROVERS, **kwargs),
            "promote", "rollback",
        )  # fmt: skip

    def test_no_answer_in_time_rolls_back(self) -> None:
        task = self._task()
        assert task.options == ["Keep new version", "Roll back"]
        assert task.defaults == ["Roll back"]
        assert task.options_mapping == {"Keep new version": "promote", "Roll back": "rollback"}

    @pytest.mark.parametrize(("phase", "skipped"), [("successful", "rollback"), ("failed", "promote")])
    def test_clear_verdict_branches_without_a_human(self, upserts: list, phase: str, skipped: str) -> None:
        task = self._task()
        context = _with_task(context_for(task, canary={"phase": phase, "reason": "r", "measurements": []}))
        with pytest.raises(DownstreamTasksSkipped) as raised:
            task.execute(context)
        assert raised.value.tasks == [(skipped, -1)]
        assert upserts == []

    def test_inconclusive_canary_asks_a_human(self, upserts: list) -> None:
        task = self._task(response_timeout=TIMEOUT)
        context = _with_task(context_for(task, canary=self.INCONCLUSIVE))
        with pytest.raises(TaskAwaitingInput) as parked:
            task.execute(context)
        assert parked.value.timeout == TIMEOUT
        (request,) = upserts
        assert request["options"] == ["Keep new version", "Roll back"]
        assert request["defaults"] == ["Roll back"]
        assert request["assigned_users"] == APPROVERS
        body = request["body"]
        assert body.startswith("### Canary: inconclusive")
        assert "3 of 4 measurements had no data" in body
        assert "| failure_ratio | ≤ 0.01 | no data | inconclusive |" in body
        assert "| p99_latency_seconds | ≤ 1 | 0.041 | successful |" in body
        assert "[failure_ratio](http://prom:9090/graph?g0.expr=sum%28increase%28" in body
        assert "{'" not in body and "[None]" not in body, "readable text, not a Python dict"
        assert "No answer: roll back." in body

    def test_missing_verdict_asks_a_human(self, upserts: list) -> None:
        task = self._task()
        with pytest.raises(TaskAwaitingInput):
            task.execute(_with_task(context_for(task)))
        body = upserts[0]["body"]
        assert body.startswith("### Canary: no verdict")
        assert "the canary task left no verdict" in body

    def test_keeping_the_new_version_promotes(self) -> None:
        task = self._task()
        context = _with_task(context_for(task, canary=self.INCONCLUSIVE))
        with pytest.raises(DownstreamTasksSkipped) as raised:
            task.execute_complete(context, _event("Keep new version", at=dt.datetime.now(dt.UTC)))
        assert raised.value.tasks == [("rollback", -1)]

    def test_timeout_rolls_back(self) -> None:
        task = self._task()
        context = _with_task(context_for(task, canary=self.INCONCLUSIVE))
        event = _event(task.defaults[0], at=dt.datetime.now(dt.UTC), by=None, timedout=True)
        with pytest.raises(DownstreamTasksSkipped) as raised:
            task.execute_complete(context, event)
        assert raised.value.tasks == [("promote", -1)]

    def test_the_decision_is_tagged_and_a_timeout_notified(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        TestRollbackApprovalOperator._versions(mlflow, tmp_path, 2)
        recorder = RecordingNotifier()
        told = recorder.told
        task = self._task(model=MODEL, version="2", notifiers=[recorder])
        at = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
        with pytest.raises(DownstreamTasksSkipped):
            task.execute_complete(_with_task(context_for(task)), _event("Keep new version", at=at))
        tags = registry.get_version(mlflow, MODEL, 2).tags
        assert (tags["canary_review"], tags["canary_review_by"]) == ("Keep new version", "ann")
        assert told == []
        with pytest.raises(DownstreamTasksSkipped):
            task.execute_complete(_with_task(context_for(task)), _event("Roll back", at=at, by=None, timedout=True))
        tags = registry.get_version(mlflow, MODEL, 2).tags
        assert (tags["canary_review"], tags["canary_review_by"]) == ("Roll back", "timeout")
        assert told == ["timed out"]

    def test_other_task_ids(self, upserts: list) -> None:
        task = in_dag(
            lambda: CanaryDecisionOperator(
                task_id="decide", canary_task_id="watch", promote_task_id="keep", rollback_task_id="restore"
            ),
            "keep", "restore",
        )  # fmt: skip
        context = _with_task(context_for(task, watch={"phase": "failed", "reason": "p99 1.8 s"}))
        with pytest.raises(DownstreamTasksSkipped) as raised:
            task.execute(context)
        assert raised.value.tasks == [("keep", -1)]
        assert task.options_mapping == {"Keep new version": "keep", "Roll back": "restore"}
