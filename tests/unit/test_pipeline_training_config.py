"""The one mapping from a models-file entry to FinetuneConfig, and the pipeline step that uses it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pitcrew.models_file import ModelEntry, Training
from pitcrew.pipeline import model_steps
from pitcrew.pipeline.training_config import finetune_config
from pitcrew.pipeline.workspace import Workspace
from training.finetune import FinetuneConfig

LABELS = ["billing", "technical", "account", "shipping"]


def _entry(**training: object) -> ModelEntry:
    return ModelEntry(
        name="textclf",
        base_model="/models/base",
        train_data="/data/train.parquet",
        inference_log="/data/log",
        feedback="/data/fb",
        labels=LABELS,
        training=Training(**training),
    )


def test_entry_training_settings_land_in_the_config() -> None:
    entry = _entry(epochs=1.5, learning_rate=1e-3, batch_size=8, time_budget_s=60)
    config = finetune_config(
        entry, output_dir=Path("out"), train_data=Path("train.parquet"), mlflow_tracking_uri="http://mlflow"
    )
    assert isinstance(config, FinetuneConfig)
    assert (config.epochs, config.learning_rate, config.batch_size, config.time_budget_s) == (
        1.5,
        1e-3,
        8,
        60,
    )
    assert config.labels == LABELS and config.labels is not entry.labels
    assert config.base_model == "/models/base"
    assert config.mlflow_tracking_uri == "http://mlflow"
    assert config.mlflow_experiment == "pitcrew/textclf/finetune"
    assert (config.progress, config.overwrite, config.resume) == (False, True, False)
    assert (config.eval_data, config.checkpoint_dir) == (None, None)
    # what the entry does not set keeps FinetuneConfig's own default
    max_length = next(f for f in dataclasses.fields(FinetuneConfig) if f.name == "max_length")
    assert config.max_length == max_length.default


def test_the_run_s_choices_win_over_the_entry() -> None:
    config = finetune_config(
        _entry(epochs=3.0),
        output_dir=Path("out"),
        train_data=Path("train.parquet"),
        mlflow_tracking_uri=None,
        base_model="/champion/checkpoint",
        eval_data=Path("eval.parquet"),
        checkpoint_dir=Path("ckpt"),
        resume=True,
        epochs=0.5,
    )
    assert config.base_model == "/champion/checkpoint" and config.epochs == 0.5
    assert (
        config.eval_data == Path("eval.parquet") and config.checkpoint_dir == Path("ckpt") and config.resume
    )


def test_fine_tune_step_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.finetune

    seen: list[FinetuneConfig] = []

    def fake_finetune(config: FinetuneConfig) -> Path:
        seen.append(config)
        config.output_dir.mkdir(parents=True, exist_ok=True)
        (config.output_dir / "training_summary.json").write_text(json.dumps({"steps": 2, "device": "cpu"}))
        return config.output_dir

    monkeypatch.setattr(training.finetune, "finetune", fake_finetune)
    ws = Workspace.for_run(tmp_path, "textclf", "run-1")
    entry = _entry(batch_size=4)
    model_steps.fine_tune(entry, ws, base_model="champion")
    ws.path("finetune.ckpt").mkdir()  # what an interrupted attempt leaves behind
    result = model_steps.fine_tune(entry, ws, base_model="champion", mlflow_tracking_uri="http://mlflow")
    common = dict(output_dir=ws.challenger, train_data=ws.train, eval_data=ws.eval, base_model="champion",
                  checkpoint_dir=ws.path("finetune.ckpt"))  # fmt: skip
    assert seen == [
        finetune_config(entry, mlflow_tracking_uri=None, resume=False, **common),
        finetune_config(entry, mlflow_tracking_uri="http://mlflow", resume=True, **common),
    ]
    assert seen[0].batch_size == 4 and result["summary"]["steps"] == 2
