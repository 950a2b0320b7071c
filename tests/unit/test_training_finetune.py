# ruff: noqa: F811  (pytest fixtures imported from training_fixtures are re-bound as test arguments)
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.unit.training_fixtures import TINY_TRAINING, demo_data, tiny_base, tiny_trained  # noqa: F401
from training import finetune as finetune_module
from training.demo_data import LABELS
from training.errors import BaseModelError, DataError, NonFiniteLossError
from training.finetune import FinetuneConfig, finetune, pick_precision, resolve_precision
from training.inference import resolve_model_source


def test_tiny_model_learns_and_writes_the_output_contract(tiny_trained: Path) -> None:
    files = {p.name for p in tiny_trained.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "labels.json", "training_summary.json"} <= files
    assert json.loads((tiny_trained / "labels.json").read_text()) == list(LABELS)
    summary = json.loads((tiny_trained / "training_summary.json").read_text())
    assert summary["eval"]["accuracy"] > 0.5  # chance is 0.25 on four balanced classes
    assert summary["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert summary["steps"] == len(summary["history"]) * (summary["steps"] // len(summary["history"]))
    assert summary["samples_per_s"] > 0
    assert not list(tiny_trained.parent.glob(".*tmp*"))


def test_single_class_data_fails_before_writing(tmp_path: Path, tiny_base: Path) -> None:
    import pandas as pd

    pd.DataFrame({"text": ["a", "b", "c"], "label": ["billing"] * 3}).to_parquet(tmp_path / "one.parquet")
    with pytest.raises(DataError, match="only one class"):
        finetune(FinetuneConfig(output_dir=tmp_path / "out", train_data=tmp_path / "one.parquet",
                                base_model=str(tiny_base), progress=False))
    assert not (tmp_path / "out").exists()


def test_missing_base_model_and_uncached_hub_id_are_named(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="does not exist"):
        resolve_model_source(str(tmp_path / "no-such-model"))
    with pytest.raises(BaseModelError, match="never downloads"):
        resolve_model_source("pitcrew-test/definitely-not-cached-model")


def test_nan_loss_stops_without_output(tmp_path: Path, tiny_base: Path, demo_data: dict[str, Path]) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_base.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = load_file(broken / "model.safetensors")
    weights["classifier.bias"] = torch.full_like(weights["classifier.bias"], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 1"):
        finetune(FinetuneConfig(output_dir=tmp_path / "out", train_data=demo_data["a_train"], base_model=str(broken),
                                labels=list(LABELS), progress=False, max_steps=3))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp*"))


def test_resume_continues_exactly_where_the_interruption_was(tmp_path: Path, tiny_base: Path,
                                                             demo_data: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    common = dict(train_data=demo_data["a_train"], eval_data=demo_data["a_eval"], base_model=str(tiny_base),
                  max_steps=6, eval_every=3, early_stopping_patience=99, progress=False, learning_rate=1e-2)
    straight = finetune(FinetuneConfig(output_dir=tmp_path / "straight", **common))

    original_log = finetune_module.MetricsSink.log

    def crash_at_step_5(self, metrics: dict, step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt("simulated preemption")
        original_log(self, metrics, step)

    monkeypatch.setattr(finetune_module.MetricsSink, "log", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        finetune(FinetuneConfig(output_dir=tmp_path / "resumed", **common))
    assert (tmp_path / "resumed.ckpt" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed").exists()
    monkeypatch.setattr(finetune_module.MetricsSink, "log", original_log)
    resumed = finetune(FinetuneConfig(output_dir=tmp_path / "resumed", resume=True, **common))

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert not (tmp_path / "resumed.ckpt").exists()


def test_time_budget_stops_early_and_keeps_best(tmp_path: Path, tiny_base: Path, demo_data: dict[str, Path]) -> None:
    out = finetune(FinetuneConfig(output_dir=tmp_path / "out", train_data=demo_data["a_train"],
                                  base_model=str(tiny_base), time_budget_s=0.0, max_steps=50, progress=False))
    summary = json.loads((out / "training_summary.json").read_text())
    assert (summary["stop_reason"], summary["steps"]) == ("time_budget", 1)
    assert summary["n_eval"] == 32  # the seeded 10% hold-out of 320 rows


def test_metrics_go_to_mlflow_per_step(tmp_path: Path, tiny_base: Path, demo_data: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = finetune(FinetuneConfig(output_dir=tmp_path / "out", train_data=demo_data["a_train"],
                                  eval_data=demo_data["a_eval"], base_model=str(tiny_base), max_steps=4,
                                  eval_every=2, progress=False, mlflow_tracking_uri=uri))
    run_id = json.loads((out / "training_summary.json").read_text())["mlflow_run_id"]
    client = MlflowClient(uri)
    losses = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run_id, "eval_accuracy")] == [2, 4]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["labels"] == ",".join(LABELS)


@pytest.mark.parametrize(("capability", "precision"), [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"),
                                                       ((8, 9), "bf16"), ((9, 0), "bf16")])
def test_precision_follows_compute_capability(capability: tuple[int, int], precision: str) -> None:
    assert pick_precision("cuda", capability) == precision
    assert pick_precision("cpu", capability) == "fp32"


def test_precision_reads_the_device_not_bf16_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    # Turing (7.5) reports bf16 as supported (emulated, slower than fp32): it must get fp16 with a scaler
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert pick_precision("cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert pick_precision("cuda") == "bf16"
    assert pick_precision("cpu") == "fp32"


def test_configured_precision_overrides_the_pick(tmp_path: Path) -> None:
    config = lambda precision: FinetuneConfig(output_dir=tmp_path / "o", train_data=tmp_path / "t.csv",  # noqa: E731
                                              precision=precision)
    assert resolve_precision(config("fp32"), "cuda") == "fp32"
    assert resolve_precision(config("bf16"), "cuda") == "bf16"
    assert resolve_precision(config("auto"), "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device"):
        resolve_precision(config("fp16"), "cpu")
