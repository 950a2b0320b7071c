"""The maintenance DAG's paths that no other end-to-end test takes, each run once by real Airflow.

docs/dag-paths.md lists every path of the pitcrew DAGs and the test that runs it; this module holds the
ones not run elsewhere: no drift, a window narrowed by ``window_hours``, ``skip_drift`` into an
evaluation reject, ``dry_run``, the human review of an inconclusive canary (keep, roll back, and left
unanswered), and the rollback DAG rejected and left unanswered.

Everything is real, as in test_e2e_pipeline.py: Airflow 3 runs the repo's DAGs with its LocalExecutor,
MLflow holds the registry, Triton serves and swaps, Prometheus answers the canary's queries, approvals
are answered over Airflow's REST API. One stack for the module; each test has a model of its own,
bootstrapped inside the test (the window test's at set-up, so that its traffic has aged past the test's
window while other tests run), so no test depends on another having run, in any order.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from pitcrew import registry
from pitcrew.airflow_api import AirflowApi
from pitcrew.demo import send, write_demo_data
from pitcrew.pipeline.bootstrap import bootstrap
from pitcrew.serving.client import TritonControl
from pitcrew.stack.components import airflow_password
from tests.pipeline_world import LABELS, RUN_TIMEOUT_S, PipelineWorld, models_file, wait_for_logged
from tests.stack_fixtures import make_settings, running_stack
from training.tiny import build_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

NO_DRIFT, WINDOW, SKIP_DRIFT, DRY_RUN = "paths_no_drift", "paths_window", "paths_skip_drift", "paths_dry_run"
CANARY_KEEP, CANARY_ROLL_BACK = "paths_canary_keep", "paths_canary_roll_back"
CANARY_UNANSWERED, ROLLBACK_UNDONE = "paths_canary_unanswered", "paths_rollback_undone"
#: 45 s to answer: the test answers the deployment approval within seconds, then waits out the timeout.
SHORT_TIMEOUT = {"approval_timeout_h": 0.0125}
#: Thresholds per model, over pipeline_world's fast ones. A canary with no traffic to the new version
#: has no series to measure: one measurement at once is enough to call it inconclusive.
NO_TRAFFIC_CANARY = {"canary_initial_delay_s": 0, "canary_interval_s": 1, "canary_count": 1}
THRESHOLDS: dict[str, dict] = {
    # The tiny champion, trained for seconds, answers nearly one class, so its predicted-label mix differs
    # from its training labels even on its own domain (Jensen-Shannon distance at most 0.741 against
    # balanced labels); a bar above that lets the drift check judge the window's text alone. The path
    # under test is what the DAG does with a "no drift" verdict; the statistics have their unit tests.
    NO_DRIFT: {"drift_min_effect": 0.9},
    WINDOW: {},
    # A gain no fine-tune on the domain the champion already knows can reach: evaluation rejects.
    SKIP_DRIFT: {"min_accuracy_gain": 0.5},
    DRY_RUN: {},
    CANARY_KEEP: NO_TRAFFIC_CANARY,
    CANARY_ROLL_BACK: NO_TRAFFIC_CANARY,
    CANARY_UNANSWERED: {**NO_TRAFFIC_CANARY, **SHORT_TIMEOUT},
    ROLLBACK_UNDONE: SHORT_TIMEOUT,
}
#: Every task after ``drift``, skipped when the run ends there.
AFTER_DRIFT = ("prepare_training", "fine_tune", "evaluate", "compile", "register", "replay", "shadow", "approval",
               "hot_swap", "canary", "canary_decision", "promote", "rollback")  # fmt: skip
DEPLOY = ("hot_swap", "canary", "canary_decision", "promote", "rollback")


@dataclass
class PathsWorld(PipelineWorld):
    #: When the window test's model got its traffic, or why it could not (raised in that test only).
    window_sent_at: dt.datetime | None = None
    window_error: BaseException | None = None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PathsWorld]:
    root = tmp_path_factory.mktemp("paths")
    tiny = build_tiny_model(root / "tiny-base", LABELS, hidden_size=32, layers=2)
    # One epoch: the tiny model learns little either way, and the paths are what is tested.
    path = models_file(root, tiny, list(THRESHOLDS), training={"epochs": 1})
    document = yaml.safe_load(path.read_text())
    for entry in document["models"]:  # each its own copy: models_file shares one thresholds mapping
        entry["thresholds"] = {**entry["thresholds"], **THRESHOLDS[entry["name"]]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    settings = make_settings(root / "home", models_file=path, airflow_parallelism=2)
    with running_stack(settings):
        world = PathsWorld(
            settings=settings,
            admin=AirflowApi(settings.airflow_url, "admin", airflow_password(settings, "admin")),
            approver=AirflowApi(settings.airflow_url, "approver", airflow_password(settings, "approver")),
            triton=TritonControl(settings.triton_http_url),
            mlflow=MlflowClient(tracking_uri=settings.mlflow_url, registry_uri=settings.mlflow_url),
        )
        try:
            # Drifted traffic, which a run with the model's window would learn from.
            world.window_sent_at = _champion_with(world, WINDOW, "b")
        except Exception as exc:  # noqa: BLE001 - the window test's failure, not every test's
            world.window_error = exc
        yield world


def _champion_with(world: PipelineWorld, model: str, domain: str) -> dt.datetime:
    """Version 1 serving, then 320 labelled requests of ``domain`` ("a": what the champion learned, "b":
    the shifted domain), logged. Returns when the last request was sent."""
    entry = world.entry(model)
    data = write_demo_data(entry, n_train=400, n_golden=32)
    result = bootstrap(entry, world.settings, epochs=1)
    assert result["version"] == 1 and result["serving_version"] == 1
    started = dt.datetime.now(dt.UTC)
    frame: pd.DataFrame = data[f"traffic_{domain}"].iloc[:320]
    sent = send(world.triton, model, frame, feedback_root=entry.feedback)
    sent_at = dt.datetime.now(dt.UTC)
    assert sent.failed == 0 and sent.versions == {"1"}
    wait_for_logged(entry, started, sent.sent)
    return sent_at


def _run(world: PipelineWorld, model: str, **conf: object) -> tuple[str, str]:
    dag_id = f"pitcrew_maintenance_{model}"
    world.admin.wait_for_dag(dag_id)
    return dag_id, world.admin.trigger(dag_id, {"model": model, "trigger": "manual", **conf})


def _versions(world: PipelineWorld, model: str) -> list[int]:
    """The versions registered in MLflow."""
    return sorted(int(v.version) for v in world.mlflow.search_model_versions(f"name='{model}'"))


def _counted(world: PipelineWorld, model: str) -> dict[str, float]:
    """The outcomes ``pitcrew_pipeline_runs_total`` counted for ``model`` (every outcome is exported, at 0)."""
    return {outcome: n for outcome, n in world.runs_total(model).items() if n}


def _assert_nothing_deployed(world: PipelineWorld, model: str) -> None:
    assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == 1
    assert registry.alias_version(world.mlflow, model, registry.PREVIOUS) is None
    assert world.triton.ready_versions(model) == [1]
    assert {p.version for p in world.triton.classify(model, ["where is my parcel"])} == {"1"}


def test_no_drift_ends_the_run_at_the_drift_check(world: PipelineWorld) -> None:
    model = NO_DRIFT
    _champion_with(world, model, "a")  # the champion's own domain: nothing to learn
    dag_id, run_id = _run(world, model)
    states = world.assert_run_ends(dag_id, run_id, "success")
    assert states["data_quality"] == "success" and states["drift"] == "success", states
    for task_id in AFTER_DRIFT:
        assert states[task_id] == "skipped", (task_id, states)
    assert states["record_outcome"] == "success", states
    drift = world.admin.xcom_value(dag_id, run_id, "drift")
    assert drift["decision"] == "no_drift" and drift["drift"] is False, drift
    outcome = world.admin.xcom_value(dag_id, run_id, "record_outcome")
    assert outcome["outcome"] == "no_drift" and outcome["reason"] == drift["reason"], outcome
    assert world.admin.xcom_value(dag_id, run_id, "data_quality", "window")["rows"] >= 320
    totals = _counted(world, model)
    assert totals == {"no_drift": 1.0}, totals
    assert _versions(world, model) == [1]  # nothing trained, nothing registered
    _assert_nothing_deployed(world, model)


def test_window_hours_in_the_conf_sets_the_window_the_run_reads(world: PathsWorld) -> None:
    model, hours = WINDOW, 0.01  # 36 s (the param's minimum), where the model's own window is an hour
    if world.window_error is not None:
        raise world.window_error
    assert world.window_sent_at is not None
    # The traffic sent at set-up is older than the conf's window when the run reads it.
    sent_at = world.window_sent_at
    wait = sent_at + dt.timedelta(hours=hours, seconds=2) - dt.datetime.now(dt.UTC)
    time.sleep(max(0.0, wait.total_seconds()))
    dag_id, run_id = _run(world, model, window_hours=hours)
    states = world.assert_run_ends(dag_id, run_id, "success")
    window = world.admin.xcom_value(dag_id, run_id, "data_quality", "window")
    span = dt.datetime.fromisoformat(window["end"]) - dt.datetime.fromisoformat(window["start"])
    assert span == dt.timedelta(hours=hours), window
    assert dt.datetime.fromisoformat(window["start"]) > sent_at and window["rows"] == 0, window
    # Nothing in the window to test: the run ends at the drift check, saying so.
    for task_id in AFTER_DRIFT:
        assert states[task_id] == "skipped", (task_id, states)
    drift = world.admin.xcom_value(dag_id, run_id, "drift")
    assert drift["decision"] == "insufficient_data" and drift["drift"] is False, drift
    outcome = world.admin.xcom_value(dag_id, run_id, "record_outcome")
    assert outcome["outcome"] == "no_drift" and "window has 0 row(s)" in outcome["reason"], outcome
    _assert_nothing_deployed(world, model)


def test_skip_drift_trains_without_a_test_and_an_evaluation_reject_ends_the_run(world: PipelineWorld) -> None:
    model = SKIP_DRIFT
    _champion_with(world, model, "a")  # traffic the drift check would call no drift (test above)
    dag_id, run_id = _run(world, model, skip_drift=True)
    states = world.assert_run_ends(dag_id, run_id, "success")
    drift = world.admin.xcom_value(dag_id, run_id, "drift")
    assert drift["decision"] == "skipped" and drift["drift"] is None, drift
    for task_id in ("data_quality", "drift", "prepare_training", "fine_tune", "evaluate", "record_outcome"):
        assert states[task_id] == "success", (task_id, states)
    for task_id in ("compile", "register", "replay", "shadow", "approval", *DEPLOY):
        assert states[task_id] == "skipped", (task_id, states)
    verdict = world.admin.xcom_value(dag_id, run_id, "evaluate")
    assert verdict["decision"] == "reject", verdict
    outcome = world.admin.xcom_value(dag_id, run_id, "record_outcome")
    assert outcome["outcome"] == "rejected_by_evaluation", outcome
    assert outcome["reason"] == "; ".join(verdict["reasons"]) and outcome["reason"], outcome
    assert outcome["facts"]["training_seconds"] > 0, outcome
    assert _counted(world, model) == {"rejected_by_evaluation": 1.0}
    assert _versions(world, model) == [1]  # the rejected challenger is never registered
    _assert_nothing_deployed(world, model)


def test_dry_run_registers_and_replays_but_asks_nobody_and_swaps_nothing(world: PipelineWorld) -> None:
    model = DRY_RUN
    _champion_with(world, model, "b")
    dag_id, run_id = _run(world, model, dry_run=True)
    states = world.assert_run_ends(dag_id, run_id, "success")
    for task_id in ("data_quality", "drift", "prepare_training", "fine_tune", "evaluate", "compile", "register",
                    "replay", "shadow", "record_outcome"):  # fmt: skip
        assert states[task_id] == "success", (task_id, states)
    for task_id in ("approval", *DEPLOY):
        assert states[task_id] == "skipped", (task_id, states)
    assert world.admin.hitl_detail(dag_id, run_id, "approval") is None  # nobody was asked
    assert world.admin.xcom_value(dag_id, run_id, "drift")["drift"] is True
    assert world.admin.xcom_value(dag_id, run_id, "replay")["rows"] > 0
    outcome = world.admin.xcom_value(dag_id, run_id, "record_outcome")
    assert outcome["outcome"] == "dry_run", outcome
    assert _counted(world, model) == {"dry_run": 1.0}
    # Registered with its lineage for people to look at, never the champion, never served.
    assert world.admin.xcom_value(dag_id, run_id, "register", "version") == 2
    assert registry.get_version(world.mlflow, model, 2).tags["airflow_dag_run_id"] == run_id
    _assert_nothing_deployed(world, model)


def _to_inconclusive_canary(world: PipelineWorld, model: str) -> tuple[str, str]:
    """A drift run, approved, whose canary sees no traffic: the decision waits for a human."""
    _champion_with(world, model, "b")
    dag_id, run_id = _run(world, model)
    world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
    world.approver.respond(dag_id, run_id, "approval", "Approve")
    world.admin.wait_for_task(dag_id, run_id, "canary_decision", {"awaiting_input"}, RUN_TIMEOUT_S)
    assert world.admin.xcom_value(dag_id, run_id, "canary")["phase"] == "inconclusive"
    request = world.admin.hitl_detail(dag_id, run_id, "canary_decision")
    assert request is not None and "inconclusive" in request["body"], request
    # The new version serves while a human looks.
    assert {p.version for p in world.triton.classify(model, ["where is my parcel"])} == {"2"}
    return dag_id, run_id


def test_inconclusive_canary_kept_by_a_human_promotes(world: PipelineWorld) -> None:
    model = CANARY_KEEP
    dag_id, run_id = _to_inconclusive_canary(world, model)
    world.approver.respond(dag_id, run_id, "canary_decision", "Keep new version")
    states = world.assert_run_ends(dag_id, run_id, "success")
    for task_id in ("hot_swap", "canary", "canary_decision", "promote", "record_outcome"):
        assert states[task_id] == "success", (task_id, states)
    assert states["rollback"] == "skipped", states
    assert world.admin.xcom_value(dag_id, run_id, "record_outcome")["outcome"] == "deployed"
    assert _counted(world, model) == {"deployed": 1.0}
    assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == 2
    assert registry.alias_version(world.mlflow, model, registry.PREVIOUS) == 1
    tags = registry.get_version(world.mlflow, model, 2).tags
    assert (tags["canary_review"], tags["canary_review_by"]) == ("Keep new version", "approver"), tags
    assert "rolled_back" not in tags
    assert {p.version for p in world.triton.classify(model, ["where is my parcel"])} == {"2"}


def test_inconclusive_canary_rolled_back_by_a_human_restores_the_champion(world: PipelineWorld) -> None:
    model = CANARY_ROLL_BACK
    dag_id, run_id = _to_inconclusive_canary(world, model)
    world.approver.respond(dag_id, run_id, "canary_decision", "Roll back")
    _assert_review_rolled_back(world, model, dag_id, run_id, by="approver")


def test_inconclusive_canary_left_unanswered_rolls_back_by_its_default(world: PipelineWorld) -> None:
    model = CANARY_UNANSWERED
    dag_id, run_id = _to_inconclusive_canary(world, model)
    # Nobody answers: after approval_timeout_h Airflow applies the request's default, Roll back.
    _assert_review_rolled_back(world, model, dag_id, run_id, by="timeout")
    request = world.admin.hitl_detail(dag_id, run_id, "canary_decision")
    assert request["chosen_options"] == ["Roll back"] and request.get("responded_by_user") is None, request


def _assert_review_rolled_back(world: PipelineWorld, model: str, dag_id: str, run_id: str, *, by: str) -> None:
    """The review's Roll back (answered ``by`` a user, or by the timeout) rolled back, and the run ended red:
    someone should look."""
    states = world.assert_run_ends(dag_id, run_id, "failed")
    for task_id in ("hot_swap", "canary", "canary_decision", "rollback"):
        assert states[task_id] == "success", (task_id, states)
    assert states["promote"] == "skipped" and states["record_outcome"] == "failed", states
    assert world.admin.xcom_value(dag_id, run_id, "rollback", "pitcrew_outcome") == "rolled_back"
    assert _counted(world, model) == {"rolled_back": 1.0}
    tags = registry.get_version(world.mlflow, model, 2).tags
    assert (tags["canary_review"], tags["canary_review_by"]) == ("Roll back", by), tags
    assert tags["rolled_back"], tags
    _assert_nothing_deployed(world, model)


def test_rollback_dag_rejected_or_left_unanswered_changes_nothing(world: PipelineWorld) -> None:
    model = ROLLBACK_UNDONE
    dag_id = f"pitcrew_rollback_{model}"
    entry = world.entry(model)
    write_demo_data(entry, n_train=400, n_golden=32)
    # Two versions promoted in turn: version 2 is the champion and serves, version 1 is `previous`.
    for expected in (1, 2):
        result = bootstrap(entry, world.settings, epochs=1)
        assert result["version"] == expected and result["serving_version"] == expected

    def unchanged() -> None:
        assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == 2
        assert registry.alias_version(world.mlflow, model, registry.PREVIOUS) == 1
        assert world.triton.ready_versions(model) == [2]
        assert {p.version for p in world.triton.classify(model, ["where is my parcel"])} == {"2"}
        assert "restored_by" not in registry.get_version(world.mlflow, model, 1).tags

    world.admin.wait_for_dag(dag_id)
    for answer in ("Reject", None):  # a human rejects; then nobody answers, and the default (Reject) applies
        run_id = world.admin.trigger(dag_id, {})
        world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
        assert "back to version 1" in world.admin.hitl_detail(dag_id, run_id, "approval")["body"]
        if answer is not None:
            world.approver.respond(dag_id, run_id, "approval", answer)
        states = world.assert_run_ends(dag_id, run_id, "success")
        assert (states["approval"], states["restore"]) == ("success", "skipped"), (answer, states)
        request = world.admin.hitl_detail(dag_id, run_id, "approval")
        assert request["chosen_options"] == ["Reject"], (answer, request)
        who = request.get("responded_by_user")
        assert (who if answer is None else who["name"]) == (None if answer is None else "approver"), request
        unchanged()
