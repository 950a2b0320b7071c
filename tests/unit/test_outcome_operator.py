"""RunOutcomeOperator: task states and declared outcomes/facts in, the pipeline metrics textfile out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException
from prometheus_client.parser import text_string_to_metric_families

from operators.base import FACTS_KEY, OUTCOME_KEY
from operators.outcome_operator import RunOutcomeOperator
from pitcrew.models_file import ModelEntry
from pitcrew.settings import get_settings
from tests.unit.operator_context import context_for, use_models

MODEL = "textclf"
STEPS = ("fine_tune", "approval", "promote", "rollback")


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    entry = ModelEntry(
        name=MODEL, train_data=str(tmp_path / "train.parquet"), inference_log=str(tmp_path / "log"),
        feedback=str(tmp_path / "fb"), labels=["billing", "technical"],
    )  # fmt: skip
    yield use_models(monkeypatch, tmp_path, entry).home_dir
    get_settings.cache_clear()


def _outcome_task() -> RunOutcomeOperator:
    """The release chain's tail: steps, then the outcome as the run's teardown."""
    with DAG(dag_id="pitcrew_maintenance_textclf", schedule=None):
        steps = [EmptyOperator(task_id=task_id) for task_id in STEPS]
        task = RunOutcomeOperator(task_id="record_outcome", model=MODEL)
        steps >> task.as_teardown(on_failure_fail_dagrun=True)
    return task


def _run(
    states: dict[str, str], outcomes: dict[str, str] | None = None, facts: dict[str, dict] | None = None
) -> tuple[RunOutcomeOperator, dict[str, Any]]:
    task = _outcome_task()
    context = context_for(task)
    ti = context["ti"]
    ti.states.update(states)
    for task_id, outcome in (outcomes or {}).items():
        ti.xcoms[(task_id, OUTCOME_KEY)] = outcome
    for task_id, reported in (facts or {}).items():
        ti.xcoms[(task_id, FACTS_KEY)] = reported
    return task, context


def _samples(home: Path) -> dict[tuple[str, tuple], float]:
    text = (home / "metrics" / f"pipeline_{MODEL}.prom").read_text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _runs(home: Path, outcome: str) -> float:
    return _samples(home)[("pitcrew_pipeline_runs_total", (("model", MODEL), ("outcome", outcome)))]


class TestRunOutcomeOperator:
    def test_defaults_one_xcom_and_no_retries(self, home: Path) -> None:
        task = _outcome_task()
        assert task.multiple_outputs is False
        assert task.retries == 0
        assert task.is_teardown

    def test_deployed_run_returns_the_summary_and_records_every_fact(self, home: Path) -> None:
        task, context = _run(
            {"fine_tune": "success", "approval": "success", "promote": "success", "rollback": "skipped"},
            outcomes={"promote": "deployed"},
            facts={
                "fine_tune": {"training_seconds": 42.5, "training_device": "cuda"},
                "approval": {"approval_wait_s": 310.0},
                "promote": {"alert_to_deploy_s": 1200.0},
            },
        )
        summary = task.execute(context)
        assert summary["outcome"] == "deployed"
        assert summary["reason"] == "declared by the step that ended the run"
        assert summary["facts"] == {
            "training_seconds": 42.5, "training_device": "cuda", "approval_wait_s": 310.0, "alert_to_deploy_s": 1200.0,
        }  # fmt: skip
        samples = _samples(home)
        assert _runs(home, "deployed") == 1
        assert _runs(home, "failed") == 0
        key = ("pitcrew_training_device_seconds_total", (("device", "cuda"), ("model", MODEL)))
        assert samples[key] == 42.5
        assert samples[("pitcrew_approval_wait_seconds", (("model", MODEL),))] == 310.0
        assert samples[("pitcrew_alert_to_deploy_seconds", (("model", MODEL),))] == 1200.0
        assert samples[("pitcrew_pipeline_last_success_timestamp_seconds", (("model", MODEL),))] > 0

    @pytest.mark.parametrize(
        "outcome", ["no_drift", "rejected_by_human", "dry_run", "rejected_by_evaluation"]
    )
    def test_runs_that_end_early_on_purpose_are_green(self, home: Path, outcome: str) -> None:
        task, context = _run({"approval": "success", "promote": "skipped"}, outcomes={"approval": outcome})
        assert task.execute(context)["outcome"] == outcome
        assert _runs(home, outcome) == 1

    def test_rolled_back_run_is_recorded_then_fails(self, home: Path) -> None:
        task, context = _run(
            {"approval": "success", "promote": "skipped", "rollback": "success"},
            outcomes={"rollback": "rolled_back"},
        )
        with pytest.raises(AirflowFailException, match="rolled_back"):
            task.execute(context)
        assert _runs(home, "rolled_back") == 1
        assert _runs(home, "deployed") == 0

    def test_failed_task_wins_over_the_declared_outcome(self, home: Path) -> None:
        task, context = _run(
            {"fine_tune": "failed", "approval": "upstream_failed", "promote": "upstream_failed"},
            outcomes={"promote": "deployed"},
        )
        with pytest.raises(AirflowFailException, match=r"failed: .*fine_tune"):
            task.execute(context)
        assert _runs(home, "failed") == 1
        assert _runs(home, "deployed") == 0

    def test_nothing_declared_counts_as_failed(self, home: Path) -> None:
        task, context = _run({step: "success" for step in STEPS})
        with pytest.raises(AirflowFailException, match="no step declared an outcome"):
            task.execute(context)
        assert _runs(home, "failed") == 1

    def test_its_own_state_and_xcoms_are_not_read(self, home: Path) -> None:
        task, context = _run(
            {"promote": "success", "record_outcome": "failed"}, outcomes={"promote": "deployed"}
        )
        context["ti"].xcoms[("record_outcome", OUTCOME_KEY)] = "rolled_back"
        assert task.execute(context)["outcome"] == "deployed"

    def test_runs_accumulate_across_runs(self, home: Path) -> None:
        for _ in range(2):
            task, context = _run({"promote": "success"}, outcomes={"promote": "deployed"})
            task.execute(context)
        task, context = _run({"rollback": "success"}, outcomes={"rollback": "rolled_back"})
        with pytest.raises(AirflowFailException):
            task.execute(context)
        assert (_runs(home, "deployed"), _runs(home, "rolled_back")) == (2, 1)

    def test_an_unknown_declared_outcome_fails_the_task_naming_it(self, home: Path) -> None:
        task, context = _run({"promote": "success"}, outcomes={"promote": "promoted"})
        with pytest.raises(ValueError, match="'promoted'"):
            task.execute(context)
