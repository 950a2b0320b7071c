"""The DAG files parse fast, without import errors, into one DAG per model, wired as designed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from pitcrew.settings import REPO_ROOT, get_settings

LABELS = ["a", "b"]


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("models")
    entry = {"train_data": "t.parquet", "inference_log": "log", "feedback": "fb", "labels": LABELS}
    models = {
        "models": [
            {"name": "alpha", **entry},
            {"name": "beta", **entry, "schedule": None, "approvers": ["ann"]},
        ]
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(models))
    mp = pytest.MonkeyPatch()
    mp.setenv("PITCREW_MODELS_FILE", str(folder / "models.yaml"))
    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    started = time.monotonic()
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    bag.parse_seconds = time.monotonic() - started
    yield bag
    mp.undo()
    get_settings.cache_clear()


def test_no_import_errors_and_fast(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.parse_seconds < 30


def test_one_dag_per_model(dagbag) -> None:
    ids = set(dagbag.dag_ids)
    assert {
        "pitcrew_maintenance_alpha",
        "pitcrew_maintenance_beta",
        "pitcrew_rollback_alpha",
        "pitcrew_rollback_beta",
    } <= ids
    assert "pitcrew_nightly_retrain_alpha" in ids
    assert "pitcrew_nightly_retrain_beta" not in ids  # schedule: null


def test_every_dag_documented_and_tagged(dagbag) -> None:
    for dag in dagbag.dags.values():
        assert dag.doc_md, dag.dag_id
        assert "pitcrew" in dag.tags, dag.dag_id
        assert dag.catchup is False


def test_maintenance_wiring(dagbag) -> None:
    dag = dagbag.dags["pitcrew_maintenance_alpha"]
    assert dag.max_active_runs == 1
    assert set(dag.params.keys()) >= {"model", "dry_run", "force_retrain", "skip_drift", "window_hours"}
    # Promote and rollback must depend on the branch markers only: any other upstream that succeeded
    # (e.g. register through an XCom argument) would make them run on every path.
    assert dag.get_task("promote").upstream_task_ids == {"canary_passed", "review_kept"}
    assert dag.get_task("rollback").upstream_task_ids == {"canary_failed", "review_rolled_back"}
    assert dag.get_task("fine_tune").queue == "gpu"
    assert dag.get_task("hot_swap").pool == "pitcrew_triton_swaps"
    assert dag.get_task("hot_swap").upstream_task_ids == {"approval", "register", "compile"}
    approval = dag.get_task("approval")
    assert approval.defaults == ["Reject"]
    assert approval.assigned_users is None
    assert dag.get_task("finish").trigger_rule == "all_done"


def test_assigned_approvers(dagbag) -> None:
    approval = dagbag.dags["pitcrew_maintenance_beta"].get_task("approval")
    assert approval.assigned_users == [{"id": "ann", "name": "ann"}]


def test_nightly_starts_at_fine_tune(dagbag) -> None:
    dag = dagbag.dags["pitcrew_nightly_retrain_alpha"]
    assert dag.schedule is not None or dag.timetable is not None
    assert "drift" not in dag.task_ids
    assert dag.get_task("prepare_training").upstream_task_ids == {"data_quality"}


def test_dag_files_have_no_hard_coded_addresses() -> None:
    for path in Path(REPO_ROOT / "dags").glob("*.py"):
        text = path.read_text()
        assert "127.0.0.1" not in text and "localhost" not in text, path


class TestOutcome:
    @pytest.mark.parametrize(
        ("states", "outcome"),
        [
            ({"promote": "success", "rollback": "skipped"}, "deployed"),
            ({"promote": "skipped", "rollback": "success", "canary_failed": "success"}, "rolled_back"),
            ({"record_no_drift": "success", "drift": "success", "prepare_training": "skipped"}, "no_drift"),
            ({"record_rejection": "success", "compile": "skipped"}, "rejected_by_evaluation"),
            ({"approval": "success", "hot_swap": "skipped"}, "rejected_by_human"),
            ({"dry_run_gate": "success", "approval": "skipped"}, "dry_run"),
            ({"prepare_training": "skipped", "data_quality": "success"}, "nothing_to_do"),
            ({"fine_tune": "failed", "evaluate": "upstream_failed"}, "failed"),
            ({"promote": "success", "hot_swap": "success", "canary": "failed"}, "failed"),
        ],
    )
    def test_outcome_from_task_states(self, states: dict, outcome: str) -> None:
        from operators.pipeline_dag import _outcome

        assert _outcome({**states, "finish": "running"}) == outcome


class TestTransientOnly:
    def test_transient_errors_are_retried_others_fail_at_once(self) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from operators.pipeline_dag import transient_only
        from pitcrew.serving.errors import TritonUnavailableError

        def raises(exc: BaseException):
            return transient_only(lambda: (_ for _ in ()).throw(exc))

        with pytest.raises(TritonUnavailableError):  # Airflow retries it with backoff
            raises(TritonUnavailableError("down"))()
        with pytest.raises(AirflowFailException, match="ValueError: bad rows"):  # no retry
            raises(ValueError("bad rows"))()


class TestValidateRequest:
    @pytest.fixture
    def request_with(self, monkeypatch: pytest.MonkeyPatch):
        import types

        import operators.pipeline_dag as pipeline_dag
        from pitcrew.models_file import ModelEntry

        entry = ModelEntry(name="alpha", train_data="t", inference_log="l", feedback="f", labels=LABELS)
        monkeypatch.setattr(pipeline_dag, "_entry", lambda model: entry)

        def call(conf: dict, **params: object) -> dict:
            context = {"dag_run": types.SimpleNamespace(conf=conf), "params": params}
            monkeypatch.setattr(pipeline_dag, "get_current_context", lambda: context)
            return pipeline_dag.validate_request("alpha")

        return call

    def test_alert_conf_is_accepted(self, request_with) -> None:
        alert = {"name": "ModelUnknownTokenSpike", "fingerprint": "f1", "starts_at": "2026-11-22T00:00:00Z"}
        request = request_with({"model": "alpha", "trigger": "alert", "alert": alert}, dry_run=True)
        assert (
            request["trigger"] == "alert" and request["dry_run"] is True and request["window_hours"] == 24.0
        )

    @pytest.mark.parametrize(
        ("conf", "message"),
        [
            ({"model": "beta"}, "maintains 'alpha'; the run asked for model 'beta'"),
            ({"trigger": "cron"}, "conf.trigger must be"),
            (
                {"trigger": "alert", "alert": {"name": "X"}},
                "missing required key\\(s\\): fingerprint, starts_at",
            ),
        ],
    )
    def test_bad_conf_fails_with_the_reason(self, request_with, conf: dict, message: str) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        with pytest.raises(AirflowFailException, match=message):
            request_with(conf)
