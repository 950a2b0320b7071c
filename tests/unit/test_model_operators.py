"""The model operators' ``execute`` with the tiny BERT of training_fixtures: real training, ONNX and MLflow (SQLite)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import torch
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk.exceptions import AirflowFailException, DownstreamTasksSkipped
from mlflow.exceptions import MlflowException

from operators.base import FACTS_KEY, OUTCOME_KEY
from operators.model_operators import (
    GPU_QUEUE,
    CompileModelOperator,
    EvaluateChallengerOperator,
    FineTuneOperator,
    ReplayTrafficOperator,
)
from pitcrew.models_file import ModelEntry, Training
from pitcrew.pipeline import data_steps, model_steps
from pitcrew.pipeline.workspace import Workspace
from pitcrew.settings import get_settings
from tests.unit.conftest import _entry, _serve
from tests.unit.operator_context import context_for, in_dag, use_models
from training.demo_data import generate
from training.errors import BaseModelError


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    yield
    get_settings.cache_clear()  # use_models pointed the cached settings at this test's tmp_path


@pytest.fixture
def entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_data: dict[str, Path]) -> ModelEntry:
    """``textclf`` with the demo labels and golden set, trained briefly and fast (the tiny model's settings)."""
    model = _entry(tmp_path).model_copy(update={
        "golden_data": str(demo_data["golden"]),
        "training": Training(epochs=1, batch_size=16, learning_rate=1e-2),
    })  # fmt: skip
    use_models(monkeypatch, tmp_path, model)
    return model


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "ws")
    workspace.root.mkdir()
    return workspace


def _split(ws: Workspace, demo_data: dict[str, Path], *, train_rows: int, eval_rows: int) -> None:
    """The split a prepare_training task left in the workspace: domain-A rows of the demo data."""
    pd.read_parquet(demo_data["a_train"]).head(train_rows).to_parquet(ws.train, index=False)
    pd.read_parquet(demo_data["a_eval"]).head(eval_rows).to_parquet(ws.eval, index=False)


class TestFineTuneOperator:
    @pytest.fixture
    def tracking_uri(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": uri}))
        monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
        return uri

    def test_runs_on_the_gpu_queue_unless_told_otherwise(self) -> None:
        assert GPU_QUEUE == "gpu"
        assert FineTuneOperator(task_id="fine_tune", model="textclf", base_model="x").queue == "gpu"
        other = FineTuneOperator(task_id="fine_tune", model="textclf", base_model="x", queue="cpu")
        assert other.queue == "cpu"

    def test_fine_tunes_the_base_on_the_workspace_split(
        self, entry: ModelEntry, ws: Workspace, tracking_uri: str, tiny_base: Path, demo_data: dict[str, Path]
    ) -> None:
        from mlflow import MlflowClient

        _split(ws, demo_data, train_rows=48, eval_rows=16)
        task = in_dag(lambda: FineTuneOperator(task_id="fine_tune", model="textclf", workspace=str(ws.root),
                                               base_model=str(tiny_base)), "evaluate")  # fmt: skip
        context = context_for(task)

        result = task.execute(context)

        checkpoint = Path(result["checkpoint"])
        assert checkpoint == ws.challenger and (checkpoint / "config.json").exists()
        assert json.loads((checkpoint / "labels.json").read_text()) == entry.labels
        summary = json.loads((checkpoint / "training_summary.json").read_text())
        assert result["device"] == summary["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
        assert result["seconds"] > 0 and result["summary"]["steps"] == 3  # 48 rows, batches of 16, 1 epoch
        assert context["ti"].pushed(FACTS_KEY) == {
            "training_seconds": result["seconds"], "training_device": result["device"],
        }  # fmt: skip
        # The per-step metrics went to the MLflow of the task's connection.
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name("pitcrew/textclf/finetune")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 1 and runs[0].data.params["base_model"] == str(tiny_base)

    def test_a_missing_base_model_fails_for_good(
        self, entry: ModelEntry, ws: Workspace, tracking_uri: str, tmp_path: Path, demo_data: dict[str, Path]
    ) -> None:
        _split(ws, demo_data, train_rows=48, eval_rows=16)
        task = in_dag(lambda: FineTuneOperator(task_id="fine_tune", model="textclf", workspace=str(ws.root),
                                               base_model=str(tmp_path / "no-such-checkpoint")))  # fmt: skip
        context = context_for(task)
        with pytest.raises(AirflowFailException, match="no-such-checkpoint"):
            task.execute(context)
        assert context["ti"].pushed(FACTS_KEY) is None

    def test_an_unavailable_mlflow_propagates_for_a_retry(
        self, entry: ModelEntry, ws: Workspace, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        unavailable = MlflowException("MLflow answered 503", error_code="TEMPORARILY_UNAVAILABLE")

        def fine_tune(*args: Any, **kwargs: Any) -> dict:
            raise unavailable

        monkeypatch.setattr(model_steps, "fine_tune", fine_tune)
        task = in_dag(lambda: FineTuneOperator(task_id="fine_tune", model="textclf", workspace=str(ws.root),
                                               base_model="unused"))  # fmt: skip
        with pytest.raises(MlflowException) as raised:
            task.execute(context_for(task))
        assert raised.value is unavailable


class TestEvaluateChallengerOperator:
    @staticmethod
    def _task(ws: Workspace, challenger: Path, champion: Path | None) -> EvaluateChallengerOperator:
        def make() -> EvaluateChallengerOperator:
            task = EvaluateChallengerOperator(
                task_id="evaluate", model="textclf", workspace=str(ws.root), challenger=str(challenger),
                champion=str(champion) if champion else None,
            )  # fmt: skip
            task >> EmptyOperator(task_id="record_outcome").as_teardown()
            return task

        task = in_dag(make, "compile")
        task.dag.get_task("compile") >> EmptyOperator(task_id="register", dag=task.dag)
        return task

    def test_a_better_challenger_is_promoted(
        self,
        entry: ModelEntry,
        ws: Workspace,
        tiny_trained: Path,
        tiny_base: Path,
        demo_data: dict[str, Path],
    ) -> None:
        _split(ws, demo_data, train_rows=0, eval_rows=120)
        task = self._task(ws, challenger=tiny_trained, champion=tiny_base)
        context = context_for(task)

        verdict = task.execute(context)

        assert verdict["decision"] == "promote", verdict["reasons"]
        assert verdict["comparison"]["accuracy_gain"] > 0
        assert set(verdict["challenger"]) == {"eval", "golden"}  # the entry's golden set was used
        assert json.loads((ws.reports / "evaluation.json").read_text())["decision"] == "promote"
        assert context["ti"].pushed(OUTCOME_KEY) is None

    def test_a_worse_challenger_ends_the_run_as_rejected(
        self,
        entry: ModelEntry,
        ws: Workspace,
        tiny_trained: Path,
        tiny_base: Path,
        demo_data: dict[str, Path],
    ) -> None:
        _split(ws, demo_data, train_rows=0, eval_rows=120)
        task = self._task(ws, challenger=tiny_base, champion=tiny_trained)
        context = context_for(task)

        with pytest.raises(DownstreamTasksSkipped) as skipped:
            task.execute(context)

        assert skipped.value.tasks == ["compile"]
        ti = context["ti"]
        assert ti.pushed("decision") == "reject" and ti.pushed()["decision"] == "reject"
        assert ti.pushed("reasons") and any("below the minimum" in r for r in ti.pushed("reasons"))
        assert ti.pushed(OUTCOME_KEY) == "rejected_by_evaluation"


@pytest.fixture(scope="module")
def compiled(
    tmp_path_factory: pytest.TempPathFactory, tiny_trained: Path, demo_data: dict[str, Path]
) -> tuple[ModelEntry, Workspace, dict]:
    """The compile task run once for the module (an ONNX export costs seconds): its entry, workspace, result."""
    tmp_path = tmp_path_factory.mktemp("compiled")
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    _split(ws, demo_data, train_rows=0, eval_rows=16)
    model = _entry(tmp_path).model_copy(update={"golden_data": str(demo_data["golden"])})
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_models(monkeypatch, tmp_path, model)
        task = in_dag(lambda: CompileModelOperator(task_id="compile", model="textclf", workspace=str(ws.root),
                                                   checkpoint=str(tiny_trained)), "register")  # fmt: skip
        result = task.execute(context_for(task))
    get_settings.cache_clear()
    return model, ws, result


class TestCompileModelOperator:
    def test_runs_on_the_gpu_queue_by_default(self) -> None:
        assert CompileModelOperator(task_id="compile", model="textclf", checkpoint="x").queue == "gpu"

    def test_writes_a_parity_checked_artifact(self, compiled: tuple[ModelEntry, Workspace, dict]) -> None:
        entry, ws, result = compiled

        artifact = Path(result["artifact"])
        assert artifact.resolve() == ws.artifact.resolve() and (artifact / "model.onnx").stat().st_size > 0
        report = result["report"]
        assert report == json.loads((artifact / "compile_report.json").read_text())
        assert report["onnx_parity"]["passed"] and report["onnx_parity"]["argmax_agreement"] == 1.0
        assert json.loads((artifact / "serving.json").read_text())["runtime"] == entry.runtime
        golden = json.loads((artifact / "golden.json").read_text())["texts"]
        assert golden == pd.read_parquet(entry.golden_data)["text"].tolist()  # the entry's golden set

    def test_a_missing_checkpoint_fails_for_good(self, entry: ModelEntry, ws: Workspace, tmp_path: Path,
                                                 demo_data: dict[str, Path]) -> None:  # fmt: skip
        _split(ws, demo_data, train_rows=0, eval_rows=16)
        missing = tmp_path / "no-such-checkpoint"
        task = in_dag(lambda: CompileModelOperator(task_id="compile", model="textclf", workspace=str(ws.root),
                                                   checkpoint=str(missing)))  # fmt: skip
        with pytest.raises(AirflowFailException, match="no-such-checkpoint") as failed:
            task.execute(context_for(task))
        assert isinstance(failed.value.__cause__, BaseModelError)  # the reason, kept for the log
        assert not (ws.artifact / "model.onnx").exists()

    def test_a_transient_error_propagates_unchanged(
        self, entry: ModelEntry, ws: Workspace, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        down = requests.ConnectionError("connection refused")

        def compile_artifact(*args: Any, **kwargs: Any) -> dict:
            raise down

        monkeypatch.setattr(model_steps, "compile_artifact", compile_artifact)
        task = in_dag(lambda: CompileModelOperator(task_id="compile", model="textclf", workspace=str(ws.root),
                                                   checkpoint="unused"))  # fmt: skip
        with pytest.raises(requests.ConnectionError) as raised:
            task.execute(context_for(task))
        assert raised.value is down


class TestReplayTrafficOperator:
    @pytest.fixture
    def artifact(self, compiled: tuple[ModelEntry, Workspace, dict]) -> Path:
        return Path(compiled[2]["artifact"])

    def test_compares_the_challenger_with_the_logged_answers(
        self, entry: ModelEntry, ws: Workspace, artifact: Path
    ) -> None:
        traffic = generate(40, domain="A", seed=8)
        _serve(entry, traffic, label_fraction=0.5)  # the champion answered "billing" (confidence 0.4) to all
        data_steps.load_window(entry, ws, hours=1)
        task = in_dag(lambda: ReplayTrafficOperator(task_id="replay", model="textclf", workspace=str(ws.root),
                                                    artifact=str(artifact)), "approve")  # fmt: skip

        result = task.execute(context_for(task))

        assert result["rows"] == 40 and result["labelled_rows"] == 20
        assert result["compared_with"].startswith("the answers logged at request time")
        assert result["champion_mean_confidence"] == pytest.approx(0.4)
        flips = result["label_flips"]
        assert all(flip.startswith("billing->") for flip in flips)
        assert sum(flips.values()) == round(40 * (1 - result["agreement"]))
        assert result["champion_accuracy"] == pytest.approx((traffic["label"].head(20) == "billing").mean())
        assert result["challenger_accuracy"] > result["champion_accuracy"]
        assert result["confidence_shift"] == pytest.approx(result["challenger_mean_confidence"] - 0.4)
        assert json.loads((ws.reports / "replay.json").read_text()) == result

    def test_with_the_champions_artifact_both_answer_the_same_inputs(
        self, entry: ModelEntry, ws: Workspace, artifact: Path
    ) -> None:
        import shutil

        _serve(entry, generate(30, domain="A", seed=9))  # logged answers: "billing" for everything
        data_steps.load_window(entry, ws, hours=1)
        shutil.copytree(artifact, ws.champion_serving)  # the champion is this very model
        task = in_dag(lambda: ReplayTrafficOperator(task_id="replay", model="textclf", workspace=str(ws.root),
                                                    artifact=str(artifact)), "approve")  # fmt: skip
        result = task.execute(context_for(task))
        # Compared with the champion now, not with what was logged: identical models agree on every row.
        assert result["compared_with"].startswith("the current champion")
        assert result["agreement"] == 1.0 and result["label_flips"] == {}
        assert result["confidence_shift"] == pytest.approx(0.0, abs=1e-6)

    def test_an_empty_window_has_nothing_to_replay(
        self, entry: ModelEntry, ws: Workspace, tmp_path: Path
    ) -> None:
        pd.DataFrame({"text": [], "label": [], "confidence": [], "feedback_label": []}).to_parquet(ws.window)
        task = in_dag(lambda: ReplayTrafficOperator(task_id="replay", model="textclf", workspace=str(ws.root),
                                                    artifact=str(tmp_path / "unused")))  # fmt: skip
        assert task.execute(context_for(task))["rows"] == 0

    def test_a_missing_artifact_fails_for_good(
        self, entry: ModelEntry, ws: Workspace, tmp_path: Path
    ) -> None:
        _serve(entry, generate(10, domain="A", seed=8))
        data_steps.load_window(entry, ws, hours=1)
        task = in_dag(lambda: ReplayTrafficOperator(task_id="replay", model="textclf", workspace=str(ws.root),
                                                    artifact=str(tmp_path / "no-such-artifact")))  # fmt: skip
        with pytest.raises(AirflowFailException, match="no-such-artifact"):
            task.execute(context_for(task))
