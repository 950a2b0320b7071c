"""The nightly retrain DAG end to end on the real stack with the tiny model.

A night with nothing to learn (no champion yet, or no new labels) is a green run that records
``nothing_to_do`` with its reason; a night with enough new labels fine-tunes, registers and waits for a
human, and nothing is swapped before that human answers.

Everything is real, as in test_e2e_pipeline.py: Airflow 3 runs the repo's DAGs, MLflow holds the registry,
Triton serves; the metrics are read from the plugin's ``GET /pitcrew/metrics`` on the Airflow API server.
One stack for the module; each test uses models of its own, bootstrapped inside the test, so neither
depends on the other having run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pitcrew import registry
from tests.pipeline_world import RUN_TIMEOUT_S, PipelineWorld, pipeline_world

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

#: Models of test 1: never bootstrapped (no champion), and a champion whose traffic got no labels.
NO_CHAMPION, NO_LABELS = "nightly_no_champion", "nightly_no_labels"
#: Model of test 2: a champion and a window of labelled traffic.
LABELLED = "nightly_labelled"
#: The chain after the data step, all skipped when the run ends at prepare_training.
AFTER_PREPARE = ("fine_tune", "evaluate", "compile", "register", "replay", "shadow", "approval", "hot_swap", "canary",
                 "canary_decision", "promote", "rollback")  # fmt: skip


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineWorld]:
    with pipeline_world(tmp_path_factory.mktemp("nightly"), [NO_CHAMPION, NO_LABELS, LABELLED]) as world:
        yield world


def test_a_night_with_nothing_to_learn_ends_green_as_nothing_to_do(nightly: PipelineWorld) -> None:
    # No champion at all: started first, it runs while the other model's champion is built.
    runs = {NO_CHAMPION: nightly.trigger(NO_CHAMPION)}
    nightly.champion_with_traffic(NO_LABELS, labelled=False)
    runs[NO_LABELS] = nightly.trigger(NO_LABELS)
    expected_reason = {NO_CHAMPION: "has no champion yet", NO_LABELS: "not enough feedback to fine-tune"}

    for model, (dag_id, run_id) in runs.items():
        states = nightly.assert_run_ends(dag_id, run_id, "success")
        assert states["data_quality"] == "success" and states["record_outcome"] == "success", (model, states)
        assert states["prepare_training"] == "skipped", (model, states)
        for task_id in AFTER_PREPARE:
            assert states[task_id] == "skipped", (model, task_id, states)
        # The step declared the outcome and why; the run's record carries both.
        assert (
            nightly.admin.xcom_value(dag_id, run_id, "prepare_training", "pitcrew_outcome") == "nothing_to_do"
        )
        outcome = nightly.admin.xcom_value(dag_id, run_id, "record_outcome")
        assert outcome["outcome"] == "nothing_to_do", (model, outcome)
        assert expected_reason[model] in outcome["reason"], (model, outcome)
        # Counted once, as a success: this run is the DAG's only one (no scheduled run fired).
        assert [run["dag_run_id"] for run in nightly.admin.dag_runs(dag_id)] == [run_id]
        totals = nightly.runs_total(model)
        assert totals["nothing_to_do"] == 1, (model, totals)
        assert sum(totals.values()) == 1, (model, totals)

    window = nightly.admin.xcom_value(*runs[NO_LABELS], "data_quality", "window")
    assert window["rows"] >= 320 and window["labelled"] == 0, window
    assert {p.version for p in nightly.triton.classify(NO_LABELS, ["my invoice is wrong"])} == {"1"}


def test_a_night_with_new_labels_waits_for_approval_and_swaps_nothing(nightly: PipelineWorld) -> None:
    model = LABELLED
    nightly.champion_with_traffic(model, labelled=True)
    dag_id, run_id = nightly.trigger(model)
    nightly.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)

    states = nightly.admin.task_states(dag_id, run_id)
    for task_id in (
        "data_quality",
        "prepare_training",
        "fine_tune",
        "evaluate",
        "compile",
        "register",
        "replay",
        "shadow",
    ):
        assert states[task_id] == "success", (task_id, states)
    assert states["hot_swap"] is None and states["record_outcome"] is None, states
    window = nightly.admin.xcom_value(dag_id, run_id, "data_quality", "window")
    assert window["labelled"] >= 300, window
    detail = nightly.admin.tasks.get_hitl_detail(dag_id, run_id, "approval", -1)
    assert "accuracy, new traffic hold-out" in detail.body
    # Registered as version 2 with its lineage, but not the champion, and Triton still serves version 1.
    assert nightly.admin.xcom_value(dag_id, run_id, "register", "version") == 2
    tags = registry.get_version(nightly.mlflow, model, 2).tags
    assert tags["airflow_dag_run_id"] == run_id and tags["parent_version"] == "1"
    assert "file://" not in detail.body
    assert registry.alias_version(nightly.mlflow, model, registry.CHAMPION) == 1
    assert nightly.triton.ready_versions(model) == [1]
    assert {p.version for p in nightly.triton.classify(model, ["where is my parcel"])} == {"1"}

    # A human rejects: the run ends green as rejected_by_human, still nothing swapped.
    nightly.approver.respond(dag_id, run_id, "approval", "Reject")
    states = nightly.assert_run_ends(dag_id, run_id, "success")
    for task_id in ("hot_swap", "canary", "canary_decision", "promote", "rollback"):
        assert states[task_id] == "skipped", (task_id, states)
    assert nightly.admin.xcom_value(dag_id, run_id, "record_outcome")["outcome"] == "rejected_by_human"
    totals = nightly.runs_total(model)
    assert totals["rejected_by_human"] == 1 and sum(totals.values()) == 1, totals
    assert registry.alias_version(nightly.mlflow, model, registry.CHAMPION) == 1
    assert nightly.triton.ready_versions(model) == [1]
    # The rejection is on the version too: who, when, why.
    tags = registry.get_version(nightly.mlflow, model, 2).tags
    assert (tags["rejected_by"], tags["rejection_reason"]) == ("approver", "rejected by approver"), tags
