"""The data operators' ``execute`` on real files, the real monitoring code and a real MLflow (SQLite, no server)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DownstreamTasksSkipped

from monitoring.inference_log import InferenceLogWriter, InferenceRecord, write_feedback
from operators.base import OUTCOME_KEY
from operators.data_operators import DataQualityOperator, DriftCheckOperator, PrepareTrainingDataOperator
from pitcrew import registry
from pitcrew.models_file import ModelEntry
from pitcrew.pipeline.workspace import Workspace
from pitcrew.settings import get_settings
from tests.unit.conftest import _entry, _serve
from tests.unit.mlflow_fixtures import sqlite_mlflow
from tests.unit.operator_context import context_for, in_dag, use_models
from training.demo_data import generate


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    yield
    get_settings.cache_clear()  # use_models pointed the cached settings at this test's tmp_path


@pytest.fixture
def entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelEntry:
    """The model ``textclf`` (trained on domain A) in a models file, with a home under tmp_path."""
    model = _entry(tmp_path)
    use_models(monkeypatch, tmp_path, model)
    return model


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


def _window(ws: Workspace, frame: pd.DataFrame) -> None:
    """The window a data_quality task left: what was served (here: a champion that answered right)."""
    ws.root.mkdir(parents=True, exist_ok=True)
    frame[["text", "label"]].to_parquet(ws.window, index=False)


@pytest.fixture
def mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template: Path) -> Any:
    """An empty MLflow on SQLite behind the ``mlflow_default`` connection; its client."""
    return sqlite_mlflow(monkeypatch, tmp_path, mlflow_template)


@pytest.fixture(scope="module")
def champion_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """The tiny base compiled to a serving artifact: what a registered champion holds (seconds)."""
    from training.compile import CompileConfig, compile_model

    folder = tmp_path_factory.mktemp("champion")
    generate(8, domain="A", seed=2).to_parquet(folder / "eval.parquet", index=False)
    return compile_model(CompileConfig(model_dir=tiny_base, output_dir=folder / "serving",
                                       eval_data=folder / "eval.parquet", tensorrt="off"))  # fmt: skip


def _register_champion(
    client: Any, tmp_path: Path, *, serving: Path, training_rows: pd.DataFrame, checkpoint: Path | None = None
) -> int:
    snapshot = tmp_path / "champion_train.parquet"
    training_rows.to_parquet(snapshot, index=False)
    version = registry.register_version(client, "textclf", serving_dir=serving, checkpoint_dir=checkpoint,
                                        training_data=snapshot, alias=registry.CHAMPION)  # fmt: skip
    return version.version


class TestDataQualityOperator:
    @staticmethod
    def _log(entry: ModelEntry, frame: pd.DataFrame, *, age_s: float) -> None:
        """Served requests ``age_s`` ago, every one with feedback."""
        writer = InferenceLogWriter(entry.inference_log, flush_interval_s=60)
        when = time.time() - age_s
        ids = [uuid.uuid4().hex for _ in range(len(frame))]
        writer.append([InferenceRecord(rid, when, entry.name, "1", text, "billing", 0.4)
                       for rid, text in zip(ids, frame["text"], strict=True)])  # fmt: skip
        writer.close()
        write_feedback(entry.feedback, dict(zip(ids, frame["label"], strict=True)))

    @pytest.fixture
    def traffic(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelEntry:
        """20 labelled requests 3 hours ago; 30 in the last minutes, 12 labelled, one of those with no text."""
        entry = _entry(tmp_path)
        entry = entry.model_copy(
            update={"thresholds": entry.thresholds.model_copy(update={"window_hours": 4.0})}
        )
        use_models(monkeypatch, tmp_path, entry)
        self._log(entry, generate(20, domain="A", seed=1), age_s=3 * 3600)
        recent = generate(30, domain="B", seed=2)
        recent.loc[0, "text"] = ""
        _serve(entry, recent, label_fraction=0.4)
        return entry

    def test_reads_the_window_hours_rendered_by_jinja(self, traffic: ModelEntry, ws: Workspace) -> None:
        task = in_dag(lambda: DataQualityOperator(task_id="data_quality", model="textclf", workspace=str(ws.root),
                                                  window_hours="{{ params.window_hours }}"), "drift_check")  # fmt: skip
        context = context_for(task, params={"window_hours": 1})
        task.render_template_fields(context)
        assert task.window_hours == "1"

        result = task.execute(context)

        window, quality = result["window"], result["quality"]
        assert (window["rows"], window["labelled"]) == (30, 12)
        span = dt.datetime.fromisoformat(window["end"]) - dt.datetime.fromisoformat(window["start"])
        assert span == dt.timedelta(hours=1)
        assert (quality["clean"], quality["quarantined"], quality["window_rows"]) == (11, 1, 30)
        assert len(pd.read_parquet(ws.window)) == 30
        assert pd.read_parquet(ws.quarantine)["text"].tolist() == [""]
        assert len(pd.read_parquet(ws.labelled)) == 11
        assert context["ti"].pushed(OUTCOME_KEY) is None

    def test_default_window_is_the_models_window_hours(self, traffic: ModelEntry, ws: Workspace) -> None:
        task = in_dag(
            lambda: DataQualityOperator(task_id="data_quality", model="textclf", workspace=str(ws.root))
        )
        result = task.execute(context_for(task))
        assert (result["window"]["rows"], result["window"]["labelled"]) == (50, 32)
        assert result["quality"]["clean"] == 31

    def test_an_empty_rendered_window_hours_means_the_default(
        self, traffic: ModelEntry, ws: Workspace
    ) -> None:
        task = in_dag(lambda: DataQualityOperator(task_id="data_quality", model="textclf", workspace=str(ws.root),
                                                  window_hours=""))  # fmt: skip
        assert task.execute(context_for(task))["window"]["rows"] == 50

    @pytest.mark.parametrize("hours", ["0", "-2", "a day", "nan"])
    def test_bad_window_hours_fails_naming_it(self, traffic: ModelEntry, ws: Workspace, hours: str) -> None:
        task = in_dag(lambda: DataQualityOperator(task_id="data_quality", model="textclf", workspace=str(ws.root),
                                                  window_hours=hours))  # fmt: skip
        with pytest.raises(AirflowFailException, match=f"window_hours.*{hours!r}"):
            task.execute(context_for(task))
        assert not ws.window.exists()

    def test_a_model_missing_from_the_models_file_fails_for_good(
        self, entry: ModelEntry, ws: Workspace
    ) -> None:
        task = in_dag(
            lambda: DataQualityOperator(task_id="data_quality", model="sentiment", workspace=str(ws.root))
        )
        with pytest.raises(AirflowFailException, match="unknown model 'sentiment'"):
            task.execute(context_for(task))


class TestDriftCheckOperator:
    @staticmethod
    def _task(ws: Workspace, **kwargs: Any) -> DriftCheckOperator:
        def make() -> DriftCheckOperator:
            task = DriftCheckOperator(
                task_id="drift_check", model="textclf", workspace=str(ws.root), **kwargs
            )
            task >> EmptyOperator(task_id="record_outcome").as_teardown()
            return task

        task = in_dag(make, "prepare_training")
        task.dag.get_task("prepare_training") >> EmptyOperator(task_id="fine_tune", dag=task.dag)
        return task

    def test_drift_returns_the_result_and_goes_on(
        self, entry: ModelEntry, ws: Workspace, mlflow: Any
    ) -> None:
        _window(ws, generate(200, domain="B", seed=3))
        task = self._task(ws)
        context = context_for(task)

        result = task.execute(context)

        assert result["decision"] == "drift" and result["drift"] is True, result["reason"]
        assert any(c["drifted"] for c in result["columns"])
        assert json.loads(Path(result["report_json"]).read_text())["decision"] == "drift"
        assert Path(result["report_html"]).exists()
        assert (
            "pitcrew_drift_detected"
            in (get_settings().home_dir / "metrics" / "drift_textclf.prom").read_text()
        )
        assert context["ti"].pushed(OUTCOME_KEY) is None
        assert not ws.path("champion/data").exists()  # no champion in MLflow: the models file's train_data

    def test_no_drift_ends_the_run_skipping_only_the_next_task(
        self, entry: ModelEntry, ws: Workspace
    ) -> None:
        _window(ws, generate(200, domain="A", seed=5))
        task = self._task(ws, reference=entry.train_data)
        context = context_for(task)

        with pytest.raises(DownstreamTasksSkipped) as skipped:
            task.execute(context)

        assert skipped.value.tasks == ["prepare_training"]  # not fine_tune (further down), not the teardown
        ti = context["ti"]
        result = ti.pushed()
        assert result["decision"] == "no_drift" and result["drift"] is False, result["reason"]
        for key in ("decision", "drift", "reason", "columns", "report_json"):
            assert ti.pushed(key) == result[key]
        assert ti.pushed(OUTCOME_KEY) == "no_drift"

    def test_proceed_without_drift_goes_on(self, entry: ModelEntry, ws: Workspace) -> None:
        _window(ws, generate(200, domain="A", seed=5))
        task = self._task(ws, reference=entry.train_data, proceed_without_drift="True")
        context = context_for(task)

        result = task.execute(context)

        assert result["decision"] == "no_drift"
        assert context["ti"].pushed(OUTCOME_KEY) is None

    def test_skip_test_tests_nothing(self, entry: ModelEntry, ws: Workspace) -> None:
        task = self._task(ws, skip_test=True)  # no window, no MLflow connection: nothing may be read
        context = context_for(task)

        result = task.execute(context)

        assert result["decision"] == "skipped" and result["drift"] is None and result["columns"] == []
        assert not (ws.root / "reports" / "drift.json").exists()
        assert context["ti"].pushed(OUTCOME_KEY) is None

    def test_a_flag_that_is_not_a_boolean_fails_naming_it(self, entry: ModelEntry, ws: Workspace) -> None:
        task = self._task(ws, skip_test="sometimes")
        with pytest.raises(AirflowFailException, match="skip_test must be true or false"):
            task.execute(context_for(task))

    def test_reference_is_the_champions_training_snapshot(
        self, tmp_path: Path, entry: ModelEntry, ws: Workspace, mlflow: Any, champion_artifact: Path
    ) -> None:
        # The models file's train_data is domain A, against which domain-B traffic drifts (test above);
        # the champion learned domain B, so against its snapshot the same kind of traffic does not.
        snapshot = generate(300, domain="B", seed=11)
        _register_champion(mlflow, tmp_path, serving=champion_artifact, training_rows=snapshot)
        _window(ws, generate(200, domain="B", seed=3))
        task = self._task(ws)
        context = context_for(task)

        with pytest.raises(DownstreamTasksSkipped):
            task.execute(context)

        assert context["ti"].pushed("decision") == "no_drift", context["ti"].pushed("reason")
        downloaded = ws.path("champion/data") / registry.TRAINING_DATA_FILE
        pd.testing.assert_frame_equal(pd.read_parquet(downloaded), snapshot[["text", "label"]])


class TestPrepareTrainingDataOperator:
    @staticmethod
    def _task(ws: Workspace, **kwargs: Any) -> PrepareTrainingDataOperator:
        return in_dag(lambda: PrepareTrainingDataOperator(task_id="prepare_training", model="textclf",
                                                          workspace=str(ws.root), **kwargs), "fine_tune")  # fmt: skip

    @staticmethod
    def _labelled(ws: Workspace, frame: pd.DataFrame) -> None:
        """The clean labelled rows a data_quality task left."""
        ws.root.mkdir(parents=True, exist_ok=True)
        frame.assign(request_id=[uuid.uuid4().hex for _ in range(len(frame))]).to_parquet(
            ws.labelled, index=False
        )

    @pytest.fixture
    def champion(
        self, tmp_path: Path, entry: ModelEntry, mlflow: Any, tiny_base: Path, champion_artifact: Path
    ) -> pd.DataFrame:
        """Version 1 is the champion, registered with checkpoint, artifact and its own training rows."""
        rows = pd.DataFrame({"text": [f"snapshot row {i}: my invoice is wrong" for i in range(40)],
                             "label": ["billing"] * 40})  # fmt: skip
        _register_champion(
            mlflow, tmp_path, serving=champion_artifact, training_rows=rows, checkpoint=tiny_base
        )
        return rows

    def test_no_champion_skips_as_nothing_to_do(self, entry: ModelEntry, ws: Workspace, mlflow: Any) -> None:
        self._labelled(ws, generate(40, domain="B", seed=4))
        task = self._task(ws, skip_when_nothing_to_learn=True)
        context = context_for(task)

        with pytest.raises(AirflowSkipException, match="no champion yet"):
            task.execute(context)

        assert context["ti"].pushed(OUTCOME_KEY) == "nothing_to_do"
        assert not ws.train.exists()

    def test_no_champion_fails_without_skip(self, entry: ModelEntry, ws: Workspace, mlflow: Any) -> None:
        self._labelled(ws, generate(40, domain="B", seed=4))
        task = self._task(ws)
        context = context_for(task)

        with pytest.raises(AirflowFailException, match="no champion yet"):
            task.execute(context)

        assert context["ti"].pushed(OUTCOME_KEY) is None

    def test_too_few_labels_skips_a_scheduled_run(
        self, entry: ModelEntry, ws: Workspace, champion: pd.DataFrame
    ) -> None:
        self._labelled(ws, generate(3, domain="B", seed=4))
        task = self._task(ws, skip_when_nothing_to_learn=True)
        context = context_for(task)

        with pytest.raises(AirflowSkipException, match="nothing new to learn.*not enough feedback"):
            task.execute(context)

        assert context["ti"].pushed(OUTCOME_KEY) == "nothing_to_do"

    def test_too_few_labels_fails_a_maintenance_run(
        self, entry: ModelEntry, ws: Workspace, champion: pd.DataFrame
    ) -> None:
        self._labelled(ws, generate(3, domain="B", seed=4))
        task = self._task(ws)
        context = context_for(task)

        with pytest.raises(AirflowFailException, match="not enough feedback"):
            task.execute(context)

        assert context["ti"].pushed(OUTCOME_KEY) is None

    def test_splits_the_window_and_fetches_the_champion(
        self, entry: ModelEntry, ws: Workspace, champion: pd.DataFrame
    ) -> None:
        new = generate(40, domain="B", seed=4).drop_duplicates("text")
        self._labelled(ws, new)
        task = self._task(ws, skip_when_nothing_to_learn=True)
        context = context_for(task)

        result = task.execute(context)

        assert result["eval_rows"] + result["new_rows"] == len(new)
        assert result["train_rows"] == result["new_rows"] + result["replay_rows"] > result["new_rows"]
        train, evaluation = pd.read_parquet(ws.train), pd.read_parquet(ws.eval)
        assert (len(train), len(evaluation)) == (result["train_rows"], result["eval_rows"])
        # The replayed rows are the champion's own training rows (its MLflow snapshot), not train_data's.
        replayed = train[~train["text"].isin(new["text"])]
        assert len(replayed) == result["replay_rows"] and replayed["text"].isin(champion["text"]).all()
        assert set(evaluation["text"]) <= set(new["text"])

        assert result["champion_version"] == 1
        checkpoint, serving = Path(result["champion_checkpoint"]), Path(result["champion_serving"])
        assert checkpoint.is_relative_to(ws.root) and serving.is_relative_to(ws.root)
        assert (checkpoint / "config.json").exists() and (serving / "model.onnx").exists()
        assert context["ti"].pushed(OUTCOME_KEY) is None
