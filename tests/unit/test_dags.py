"""The DAG files parse fast, without import errors, into one DAG per model, wired as designed and as wiring only."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
import yaml

from pitcrew.settings import REPO_ROOT, get_settings

LABELS = ["a", "b"]
DAGS = REPO_ROOT / "dags"
CHAIN = ["data_quality", "drift", "prepare_training", "fine_tune", "evaluate", "compile", "register", "replay",
         "shadow", "approval", "hot_swap", "canary", "canary_decision"]  # fmt: skip


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("models")
    entry = {"train_data": "t.parquet", "inference_log": "log", "feedback": "fb", "labels": LABELS}
    models = {
        "models": [
            {"name": "alpha", **entry, "schedule": "30 3 * * *"},
            {"name": "beta", **entry, "schedule": None, "approvers": ["ann"]},
        ]
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(models))
    mp = pytest.MonkeyPatch()
    mp.setenv("PITCREW_MODELS_FILE", str(folder / "models.yaml"))
    mp.syspath_prepend(str(DAGS))  # as Airflow does for its DAGs folder (pitcrew_dags lives there)
    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    started = time.monotonic()
    bag = DagBag(dag_folder=str(DAGS))
    bag.parse_seconds = time.monotonic() - started
    yield bag
    mp.undo()
    get_settings.cache_clear()


def test_no_import_errors_and_fast(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.parse_seconds < 30


def test_one_dag_per_model(dagbag) -> None:
    assert set(dagbag.dag_ids) == {
        "pitcrew_maintenance_alpha",
        "pitcrew_maintenance_beta",
        "pitcrew_rollback_alpha",
        "pitcrew_rollback_beta",
        "pitcrew_nightly_retrain_alpha",
        "pitcrew_watch",
    }  # fmt: skip  (beta has schedule: null, so no nightly DAG; the package folder defines no DAG)


def test_every_dag_documented_tagged_and_one_run_at_a_time(dagbag) -> None:
    for dag in dagbag.dags.values():
        assert dag.doc_md, dag.dag_id
        assert "pitcrew" in dag.tags, dag.dag_id
        assert dag.catchup is False and dag.max_active_runs == 1, dag.dag_id


def test_every_pipeline_task_is_a_pitcrew_operator(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            assert type(task).__module__.startswith("operators."), (dag_id, task.task_id, type(task))


def test_maintenance_is_one_chain_with_two_ends_and_an_outcome_teardown(dagbag) -> None:
    dag = dagbag.dags["pitcrew_maintenance_alpha"]
    assert len(dag.tasks) == len(CHAIN) + 3
    for upstream, task_id in zip(CHAIN, CHAIN[1:], strict=False):
        assert dag.get_task(task_id).upstream_task_ids == {upstream}, task_id
    assert dag.get_task("data_quality").upstream_task_ids == set()
    assert dag.get_task("promote").upstream_task_ids == {"canary_decision"}
    assert dag.get_task("rollback").upstream_task_ids == {"canary_decision"}
    outcome = dag.get_task("record_outcome")
    assert outcome.is_teardown and outcome.on_failure_fail_dagrun
    assert outcome.upstream_task_ids == {"promote", "rollback"}
    groups = dag.task_group.get_task_group_dict()
    assert set(groups["train"].children) == {"prepare_training", "fine_tune", "evaluate", "compile"}
    assert set(groups["deploy"].children) == {"hot_swap", "canary", "canary_decision", "promote", "rollback"}


def test_maintenance_queues_pools_and_gates(dagbag) -> None:
    dag = dagbag.dags["pitcrew_maintenance_alpha"]
    assert dag.get_task("fine_tune").queue == "gpu" and dag.get_task("compile").queue == "gpu"
    assert dag.get_task("hot_swap").pool == dag.get_task("rollback").pool == "pitcrew_triton_swaps"
    approval = dag.get_task("approval")
    assert approval.defaults == ["Reject"] and approval.assigned_users is None and approval.retries == 0
    assert approval.response_timeout.total_seconds() == 24 * 3600
    decision = dag.get_task("canary_decision")
    assert decision.defaults == ["Roll back"]
    assert set(decision.options_mapping.values()) == {"promote", "rollback"}
    assert dag.get_task("drift").skip_test == "{{ params.skip_drift }}"
    assert dag.get_task("prepare_training").skip_when_nothing_to_learn is False
    assert set(dag.params.keys()) == {"model", "trigger", "alert", "dry_run", "force_retrain", "skip_drift",
                                      "window_hours"}  # fmt: skip


def test_assigned_approvers(dagbag) -> None:
    for dag_id in ("pitcrew_maintenance_beta", "pitcrew_rollback_beta"):
        assert dagbag.dags[dag_id].get_task("approval").assigned_users == [{"id": "ann", "name": "ann"}]
    assert dagbag.dags["pitcrew_maintenance_beta"].get_task("canary_decision").assigned_users == [
        {"id": "ann", "name": "ann"}
    ]


def test_nightly_is_the_same_chain_without_drift_on_the_models_schedule(dagbag) -> None:
    dag = dagbag.dags["pitcrew_nightly_retrain_alpha"]
    assert dag.schedule == "30 3 * * *"
    assert "drift" not in dag.task_ids
    assert dag.get_task("prepare_training").upstream_task_ids == {"data_quality"}
    assert dag.get_task("prepare_training").skip_when_nothing_to_learn is True
    maintenance = dagbag.dags["pitcrew_maintenance_alpha"]
    assert set(dag.task_ids) == set(maintenance.task_ids) - {"drift"}
    assert dag.params["trigger"] == "schedule"
    assert "force_retrain" not in dag.params and "skip_drift" not in dag.params


def test_rollback_asks_then_restores_what_was_approved(dagbag) -> None:
    dag = dagbag.dags["pitcrew_rollback_alpha"]
    assert dag.task_ids == ["approval", "restore"]
    restore = dag.get_task("restore")
    assert restore.upstream_task_ids == {"approval"} and restore.pool == "pitcrew_triton_swaps"
    assert "task_ids='approval', key='previous'" in restore.version


class TestRunConfValidation:
    """Airflow validates a new run's conf against these params (REST API and the webhook's trigger_dag alike)."""

    ALERT = {"name": "ModelUnknownTokenSpike", "fingerprint": "f1", "starts_at": "2026-11-22T00:00:00Z"}

    def validate(self, dagbag, conf: dict) -> dict:
        # The scheduler and API server hold the serialized DAG; create_dagrun validates its params so.
        from airflow.serialization.serialized_objects import DagSerialization

        dag = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["pitcrew_maintenance_alpha"]))
        return dag.params.deep_merge(conf).validate()

    def test_the_webhooks_conf_is_accepted(self, dagbag) -> None:
        conf = {"model": "alpha", "trigger": "alert", "reason": "serving symptom",
                "alert": {**self.ALERT, "labels": {"model": "alpha"}, "source": "alertmanager"}}  # fmt: skip
        params = self.validate(dagbag, conf)
        assert params["trigger"] == "alert" and params["alert"]["fingerprint"] == "f1"
        assert params["dry_run"] is False and params["window_hours"] == 24.0

    @pytest.mark.parametrize(
        ("conf", "field"),
        [
            ({"model": "beta"}, "model"),
            ({"trigger": "cron"}, "trigger"),
            ({"trigger": "alert", "alert": {"name": "X"}}, "alert"),
            ({"alert": {**ALERT, "fingerprint": ""}}, "alert"),
            ({"window_hours": 0}, "window_hours"),
        ],
    )
    def test_bad_conf_is_refused_naming_the_field(self, dagbag, conf: dict, field: str) -> None:
        from airflow.sdk.exceptions import ParamValidationError

        with pytest.raises(ParamValidationError, match=field):
            self.validate(dagbag, conf)


def _dag_sources() -> list[Path]:
    return sorted(DAGS.glob("*.py")) + sorted((DAGS / "pitcrew_dags").glob("*.py"))


def test_dag_files_are_wiring_only() -> None:
    """No task body, class, lambda or network address in a DAG file or the wiring package."""
    for path in _dag_sources():
        source = path.read_text()
        assert "127.0.0.1" not in source and "localhost" not in source, path
        for node in ast.walk(ast.parse(source)):
            assert not isinstance(node, ast.ClassDef | ast.Lambda | ast.AsyncFunctionDef), (path, node.lineno)
            if isinstance(node, ast.FunctionDef):
                # Small builders in the wiring package are allowed; task bodies (@task) are not.
                assert path.parent.name == "pitcrew_dags", (path, node.name)
                assert not node.decorator_list, (path, node.name)


def test_wiring_package_is_ignored_by_the_dag_processor() -> None:
    assert "pitcrew_dags/" in (DAGS / ".airflowignore").read_text().split()
