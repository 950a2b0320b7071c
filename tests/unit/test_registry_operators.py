"""Registry operators on a real MLflow (SQLite store, no server): register with lineage, promote with approver."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException
from mlflow import MlflowClient

from operators.base import FACTS_KEY, OUTCOME_KEY
from operators.registry_operators import (
    PromoteChampionOperator,
    RegisterModelVersionOperator,
    as_mapping,
)
from pitcrew import registry
from pitcrew.models_file import ModelEntry
from pitcrew.settings import get_settings
from tests.unit.conftest import write_artifact
from tests.unit.mlflow_fixtures import sqlite_mlflow
from tests.unit.operator_context import APPROVED, RUN_ID, context_for, in_dag, record_hitl, use_models

MODEL = "textclf"
LABELS = ["billing", "technical", "account", "shipping"]
EVALUATION = {
    "decision": "promote",
    "reasons": ["accuracy +0.120 on new traffic (McNemar p=0.001)", "golden set unchanged"],
    "challenger": {
        "eval": {"accuracy": 0.91, "macro_f1": 0.9, "rows": 120, "labels": LABELS},
        "golden": {"accuracy": 0.95, "macro_f1": 0.94},
    },
    "champion": {"eval": {"accuracy": 0.79, "macro_f1": 0.75}, "golden": {"accuracy": 0.95, "macro_f1": 0.94}},
    "comparison": {"accuracy_gain": 0.12, "mcnemar": {"p_value": 0.001, "statistic": 10.8}, "golden_accuracy_gain": 0.0},
    "settings": {"min_gain": 0.0, "max_golden_drop": 0.02},
}  # fmt: skip
COMPILE_REPORT = {
    "parity": {"max_abs_diff": 2e-6, "rows": 64},
    "tensorrt": {"status": "skipped", "reason": "disabled (tensorrt=off)"},
    "versions": {"onnx": "1.17.0", "onnxruntime": "1.20.1", "torch": "2.5.1"},
}
WINDOW = {"start": "2026-11-30T00:00:00+00:00", "end": "2026-12-01T00:00:00+00:00", "rows": 400}
DRIFT = {
    "decision": "drift",
    "reason": "1 of 3 columns drifted",
    "columns": [{"column": "text.length", "drifted": True, "p_value": 0.0001}],
}
ALERT = {"name": "PitcrewInputDrift", "fingerprint": "3fa0c1d2e4b5a697", "starts_at": "2026-12-01T00:00:00Z"}


@pytest.fixture
def mlflow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_template: Path) -> Iterator[MlflowClient]:
    """The ``mlflow_default`` connection on a fresh SQLite store in tmp_path; the models file names MODEL."""
    client = sqlite_mlflow(monkeypatch, tmp_path, mlflow_template)
    entry = ModelEntry(
        name=MODEL, train_data=str(tmp_path / "train.parquet"), inference_log=str(tmp_path / "log"),
        feedback=str(tmp_path / "fb"), labels=LABELS,
    )  # fmt: skip
    use_models(monkeypatch, tmp_path, entry)
    yield client
    get_settings.cache_clear()


def _serving(folder: Path, marker: str = "v") -> Path:
    """A compiled serving folder (docs/model-artifact.md), as far as the registry and the servable check read it."""
    write_artifact(folder, labels=LABELS)
    (folder / "model.onnx").write_bytes(b"onnx-" + marker.encode())
    return folder


@pytest.fixture(autouse=True)
def triton_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection the servable check reads (what this Triton runs); nothing is called on it."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_TRITON_DEFAULT",
        json.dumps({"conn_type": "triton", "host": "127.0.0.1", "port": 1, "extra": {"core_standin": True}}),
    )


def _run_files(tmp_path: Path, name: str = "run") -> dict[str, str]:
    """What the steps before ``register`` leave: a checkpoint, a serving folder, the workspace's training rows."""
    root = tmp_path / name
    checkpoint = root / "challenger" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "bert", "num_labels": len(LABELS)}))
    artifact = _serving(root / "artifact", name)
    workspace = root / "ws"
    workspace.mkdir()
    pd.DataFrame({"text": ["refund my card", "app crashes"], "label": ["billing", "technical"]}).to_parquet(
        workspace / "train.parquet", index=False
    )
    return {"checkpoint": str(checkpoint), "artifact": str(artifact), "workspace": str(workspace)}


def _register_task(tmp_path: Path, name: str = "run", **overrides: Any) -> RegisterModelVersionOperator:
    kwargs: dict[str, Any] = {
        "task_id": "register", "model": MODEL, **_run_files(tmp_path, name), "compile_report": COMPILE_REPORT,
        "evaluation": EVALUATION, "window": WINDOW, "drift": DRIFT, "parent_version": None, "trigger": "alert",
        "alert": ALERT, **overrides,
    }  # fmt: skip
    return in_dag(lambda: RegisterModelVersionOperator(**kwargs), "replay")


def _register_directly(client: MlflowClient, tmp_path: Path, marker: str) -> int:
    return registry.register_version(client, MODEL, serving_dir=_serving(tmp_path / marker, marker)).version


class TestAsMapping:
    def test_mapping_is_copied(self) -> None:
        source = {"a": 1}
        result = as_mapping(source, "x")
        assert result == {"a": 1}
        result["b"] = 2
        assert source == {"a": 1}

    @pytest.mark.parametrize("value", [None, "", "  ", "None", "null"])
    def test_nothing(self, value: Any) -> None:
        assert as_mapping(value, "x") is None

    @pytest.mark.parametrize(
        "value", [ALERT, EVALUATION, {"nan": None, "flag": True, "nested": [1, {"k": "v"}]}]
    )
    def test_the_text_jinja_renders_a_dict_as(self, value: dict) -> None:
        assert as_mapping(str(value), "x") == value

    def test_not_python_literal_names_the_argument(self) -> None:
        with pytest.raises(ValueError, match=r"^alert must be a mapping, got 'PitcrewInputDrift'"):
            as_mapping("PitcrewInputDrift", "alert")

    def test_literal_of_another_type_names_the_argument_and_type(self) -> None:
        with pytest.raises(ValueError, match=r"^window must be a mapping, got list$"):
            as_mapping("[1, 2]", "window")


class TestRegisterModelVersionOperator:
    def test_registers_the_challenger_with_its_lineage(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        task = _register_task(tmp_path)
        assert task.execute(context_for(task)) == {"version": 1, "parent_version": None}

        assert registry.alias_version(mlflow, MODEL, registry.CHALLENGER) == 1
        assert registry.alias_version(mlflow, MODEL, registry.CHAMPION) is None
        tags = registry.get_version(mlflow, MODEL, 1).tags
        assert tags["airflow_dag_run_id"] == RUN_ID
        assert tags["trigger"] == "alert"
        assert (tags["alert_name"], tags["alert_fingerprint"]) == ("PitcrewInputDrift", "3fa0c1d2e4b5a697")
        assert tags["parent_version"] == ""
        assert tags["data_window"] == "2026-11-30T00:00:00+00:00/2026-12-01T00:00:00+00:00"
        assert json.loads(tags["drift_report"]) == DRIFT
        assert json.loads(tags["metrics_vs_champion"]) == {"decision": "promote", **EVALUATION["comparison"]}
        assert json.loads(tags["compile_target"]) == {
            "onnxruntime": "1.20.1", "tensorrt": "skipped", "gpu": None, "compute_capability": None,
        }  # fmt: skip

    def test_the_versions_run_holds_metrics_and_artifacts(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        task = _register_task(tmp_path)
        task.execute(context_for(task))
        run = mlflow.get_run(registry.get_version(mlflow, MODEL, 1).run_id)
        # Numbers of the challenger's new-traffic scores only; the label list is not a metric.
        assert run.data.metrics == {"eval_accuracy": 0.91, "eval_macro_f1": 0.9, "eval_rows": 120}
        assert run.info.status == "FINISHED"
        assert run.data.tags["trigger"] == "alert"
        assert run.info.run_name == f"{MODEL}-alert-{RUN_ID}"  # not one name for every run
        logged = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
        assert {registry.SERVING_PATH, registry.CHECKPOINT_PATH, registry.TRAINING_DATA_PATH} <= logged
        snapshot = registry.training_snapshot(mlflow, MODEL, 1, tmp_path / "snapshot")
        assert pd.read_parquet(snapshot)["label"].tolist() == ["billing", "technical"]

    def test_next_version_names_its_parent(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        first = _register_task(tmp_path, "first")
        first.execute(context_for(first))
        registry.promote(mlflow, MODEL, 1, approver="ann")
        second = _register_task(tmp_path, "second", parent_version="1", trigger="schedule", alert=None)
        assert second.execute(context_for(second)) == {"version": 2, "parent_version": 1}
        tags = registry.get_version(mlflow, MODEL, 2).tags
        assert (tags["parent_version"], tags["trigger"], tags["alert_fingerprint"]) == ("1", "schedule", "")
        assert registry.alias_version(mlflow, MODEL, registry.CHALLENGER) == 2
        assert registry.alias_version(mlflow, MODEL, registry.CHAMPION) == 1

    def test_accepts_inputs_as_jinja_renders_them(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        task = _register_task(
            tmp_path, evaluation=str(EVALUATION), window=str(WINDOW), compile_report=str(COMPILE_REPORT),
            drift="None", parent_version="None", trigger="{{ params.trigger }}", alert="{{ params.alert }}",
        )  # fmt: skip
        context = context_for(task, params={"trigger": "watch", "alert": ALERT})
        task.render_template_fields(context)
        assert task.alert == str(ALERT)  # no native rendering: the DAG passes text
        assert task.execute(context) == {"version": 1, "parent_version": None}
        tags = registry.get_version(mlflow, MODEL, 1).tags
        assert (tags["trigger"], tags["alert_fingerprint"]) == ("watch", "3fa0c1d2e4b5a697")
        assert json.loads(tags["drift_report"]) == {"skipped": True}
        assert json.loads(tags["metrics_vs_champion"])["accuracy_gain"] == 0.12
        assert (
            mlflow.get_run(registry.get_version(mlflow, MODEL, 1).run_id).data.metrics["eval_accuracy"]
            == 0.91
        )

    def test_rendered_none_alert_is_no_alert(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        task = _register_task(tmp_path, trigger="{{ params.trigger }}", alert="{{ params.alert }}")
        context = context_for(task, params={"trigger": "manual", "alert": None})
        task.render_template_fields(context)
        task.execute(context)
        tags = registry.get_version(mlflow, MODEL, 1).tags
        assert (tags["trigger"], tags["alert_name"], tags["alert_fingerprint"]) == ("manual", "", "")

    @pytest.mark.parametrize(
        ("argument", "value", "message"),
        [
            ("alert", "PitcrewInputDrift", "alert must be a mapping"),
            ("evaluation", "promote", "evaluation must be a mapping"),
            ("window", "[1, 2]", "window must be a mapping, got list"),
            ("compile_report", "{'versions': ", "compile_report must be a mapping"),
        ],
    )
    def test_non_mapping_text_fails_for_good_naming_the_argument(
        self, mlflow: MlflowClient, tmp_path: Path, argument: str, value: str, message: str
    ) -> None:
        task = _register_task(tmp_path, **{argument: value})
        with pytest.raises(AirflowFailException, match=message):
            task.execute(context_for(task))
        assert mlflow.search_registered_models() == []

    def test_nothing_deployable_fails_for_good(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        task = _register_task(tmp_path)
        Path(task.artifact, "model.onnx").unlink()
        with pytest.raises(AirflowFailException, match="ArtifactError: .*needs model.onnx, which is missing"):
            task.execute(context_for(task))
        assert registry.alias_version(mlflow, MODEL, registry.CHALLENGER) is None

    def test_what_the_serving_triton_cannot_run_is_refused_before_registering(
        self, mlflow: MlflowClient, tmp_path: Path
    ) -> None:
        task = _register_task(tmp_path)
        serving = Path(task.artifact, "serving.json")
        serving.write_text(json.dumps({**json.loads(serving.read_text()), "runtime": "onnxruntime"}))
        with pytest.raises(AirflowFailException, match="compiled for runtime onnxruntime, the models file says"):
            task.execute(context_for(task))
        assert registry.alias_version(mlflow, MODEL, registry.CHALLENGER) is None

    def test_lineage_arguments_are_templated(self) -> None:
        fields = set(RegisterModelVersionOperator.template_fields)
        assert {"model", "workspace", "checkpoint", "artifact", "compile_report", "evaluation", "window", "drift",
                "parent_version", "trigger", "alert"} <= fields  # fmt: skip


class TestPromoteChampionOperator:
    APPROVAL = {
        "chosen_options": ["Approve"], "params_input": {}, "responded_at": "2026-12-01T00:10:00+00:00",
        "responded_by_user": {"id": "ann", "name": "ann"},
    }  # fmt: skip

    @pytest.fixture(autouse=True)
    def _approved(self, monkeypatch: pytest.MonkeyPatch) -> None:
        record_hitl(monkeypatch, approval=APPROVED)

    def _promote(self, version: Any, alert: Any = None, **xcoms: Any) -> tuple[PromoteChampionOperator, dict]:
        task = in_dag(
            lambda: PromoteChampionOperator(task_id="promote", model=MODEL, version=version, alert=alert)
        )
        return task, context_for(task, **{"approval": self.APPROVAL, **xcoms})

    def test_moves_the_aliases_and_records_the_approver(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        v1 = _register_directly(mlflow, tmp_path, "v1")
        registry.promote(mlflow, MODEL, v1, approver="bootstrap")
        v2 = _register_directly(mlflow, tmp_path, "v2")
        assert registry.alias_version(mlflow, MODEL, registry.CHALLENGER) == v2

        task, context = self._promote(str(v2))
        assert task.execute(context) == {"champion": v2, "previous": v1, "approver": "ann"}

        assert registry.alias_version(mlflow, MODEL, registry.CHAMPION) == v2
        assert registry.alias_version(mlflow, MODEL, registry.PREVIOUS) == v1
        assert registry.alias_version(mlflow, MODEL, registry.CHALLENGER) is None
        tags = registry.get_version(mlflow, MODEL, v2).tags
        assert tags["approver"] == "ann"
        promoted_at = dt.datetime.fromisoformat(tags["promoted_at"])
        assert abs((dt.datetime.now(dt.UTC) - promoted_at).total_seconds()) < 60
        assert context["ti"].pushed(OUTCOME_KEY) == "deployed"

    def test_first_champion_has_no_previous(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        v1 = _register_directly(mlflow, tmp_path, "v1")
        task, context = self._promote(v1)
        assert task.execute(context) == {"champion": v1, "previous": None, "approver": "ann"}
        assert registry.alias_version(mlflow, MODEL, registry.PREVIOUS) is None

    @pytest.mark.parametrize(
        ("recorded", "reason"),
        [(None, "never asked anyone"), ({**APPROVED, "response_received": False, "chosen_options": None},
                                         "marked successful by hand")],
    )  # fmt: skip
    def test_without_a_recorded_approval_nothing_is_promoted(
        self, mlflow: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: Any, reason: str
    ) -> None:
        v1 = _register_directly(mlflow, tmp_path, "v1")
        registry.promote(mlflow, MODEL, v1, approver="bootstrap")
        v2 = _register_directly(mlflow, tmp_path, "v2")
        record_hitl(monkeypatch, approval=recorded)
        task, context = self._promote(v2)
        with pytest.raises(AirflowFailException, match=f"refusing to promote {MODEL} version {v2}.*{reason}"):
            task.execute(context)
        assert registry.alias_version(mlflow, MODEL, registry.CHAMPION) == v1
        assert "approver" not in registry.get_version(mlflow, MODEL, v2).tags

    def test_reports_alert_to_deploy_time(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        v1 = _register_directly(mlflow, tmp_path, "v1")
        started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90)
        alert = {**ALERT, "starts_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}  # Alertmanager's format
        task, context = self._promote(v1, alert=str(alert))
        task.execute(context)
        seconds = context["ti"].pushed(FACTS_KEY)["alert_to_deploy_s"]
        assert 90 <= seconds < 150

    def test_alert_start_without_zone_is_utc(self, mlflow: MlflowClient, tmp_path: Path) -> None:
        v1 = _register_directly(mlflow, tmp_path, "v1")
        started = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90)).replace(tzinfo=None)
        task, context = self._promote(v1, alert={**ALERT, "starts_at": started.isoformat()})
        task.execute(context)
        assert 90 <= context["ti"].pushed(FACTS_KEY)["alert_to_deploy_s"] < 150

    def test_unreadable_alert_start_does_not_undo_the_promotion(
        self, mlflow: MlflowClient, tmp_path: Path
    ) -> None:
        # A manual run's alert form accepts any text as starts_at; the promotion has happened by then.
        v1 = _register_directly(mlflow, tmp_path, "v1")
        task, context = self._promote(v1, alert={**ALERT, "starts_at": "yesterday morning"})
        assert task.execute(context)["champion"] == v1
        assert context["ti"].pushed(OUTCOME_KEY) == "deployed"
        assert context["ti"].pushed(FACTS_KEY) is None

    def test_non_mapping_alert_fails_before_anything_moves(
        self, mlflow: MlflowClient, tmp_path: Path
    ) -> None:
        v1 = _register_directly(mlflow, tmp_path, "v1")
        task, context = self._promote(v1, alert="PitcrewInputDrift")
        with pytest.raises(AirflowFailException, match="alert must be a mapping"):
            task.execute(context)
        assert registry.alias_version(mlflow, MODEL, registry.CHAMPION) is None
        assert context["ti"].pushed(OUTCOME_KEY) is None

    @pytest.mark.parametrize("alert", [None, "None", {"name": "manual", "fingerprint": "f"}])
    def test_no_alert_start_no_fact(self, mlflow: MlflowClient, tmp_path: Path, alert: Any) -> None:
        v1 = _register_directly(mlflow, tmp_path, "v1")
        task, context = self._promote(v1, alert=alert)
        task.execute(context)
        assert context["ti"].pushed(FACTS_KEY) is None
        assert context["ti"].pushed(OUTCOME_KEY) == "deployed"

    def test_unknown_version_fails_for_good_and_declares_nothing(
        self, mlflow: MlflowClient, tmp_path: Path
    ) -> None:
        v1 = _register_directly(mlflow, tmp_path, "v1")
        registry.promote(mlflow, MODEL, v1, approver="bootstrap")
        task, context = self._promote(7)
        with pytest.raises(AirflowFailException, match="MlflowException"):
            task.execute(context)
        assert registry.alias_version(mlflow, MODEL, registry.CHAMPION) == v1
        assert context["ti"].pushed(OUTCOME_KEY) is None
