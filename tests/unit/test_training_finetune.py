from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.unit.training_fixtures import TINY_TRAINING
from training import finetune as finetune_module
from training.batching import EmbeddingGradBuffer
from training.demo_data import LABELS
from training.errors import BaseModelError, DataError, NonFiniteLossError
from training.finetune import FinetuneConfig, finetune
from training.inference import resolve_model_source
from training.precision import cpu_computes_bf16, pick_precision, resolve_precision


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
    # log_every=1: the simulated preemption below hooks the per-step loss logging
    common = dict(train_data=demo_data["a_train"], eval_data=demo_data["a_eval"], base_model=str(tiny_base),
                  max_steps=6, eval_every=3, early_stopping_patience=99, progress=False, learning_rate=1e-2,
                  log_every=1)
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
    # the weights are the best eval's (step 3 or 6); the last loss also covers the steps after the resume
    summaries = [json.loads((out / "training_summary.json").read_text()) for out in (straight, resumed)]
    assert summaries[0]["last_train_loss"] == pytest.approx(summaries[1]["last_train_loss"], abs=1e-6)
    assert not (tmp_path / "resumed.ckpt").exists()


def test_time_budget_stops_early_and_keeps_best(tmp_path: Path, tiny_base: Path, demo_data: dict[str, Path]) -> None:
    out = finetune(FinetuneConfig(output_dir=tmp_path / "out", train_data=demo_data["a_train"],
                                  base_model=str(tiny_base), time_budget_s=0.0, max_steps=50, progress=False))
    summary = json.loads((out / "training_summary.json").read_text())
    assert (summary["stop_reason"], summary["steps"]) == ("time_budget", 1)
    assert summary["n_eval"] == 32  # the seeded 10% hold-out of 320 rows


def test_resume_after_an_epoch_boundary_replays_the_same_batches(tmp_path: Path, tiny_base: Path,
                                                                 demo_data: dict[str, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # 320 rows in batches of 128: 3 steps an epoch, the last one short; interrupted after the step-4
    # checkpoint, the resumed run starts one batch into the second epoch, with the default log_every.
    # No eval set, so the output is the last step's weights (with one, it would be the best eval's).
    common = dict(train_data=demo_data["a_train"], eval_fraction=0.0, base_model=str(tiny_base), labels=list(LABELS),
                  max_steps=7, eval_every=2, batch_size=128, progress=False, learning_rate=1e-2)
    straight = finetune(FinetuneConfig(output_dir=tmp_path / "straight", **common))
    original_save = finetune_module.save_checkpoint
    saved_steps = []

    def crash_after_second_checkpoint(folder, model, optimizer, scheduler, scaler, state, best_state) -> None:
        original_save(folder, model, optimizer, scheduler, scaler, state, best_state)
        saved_steps.append(state["step"])
        if len(saved_steps) == 2:
            raise KeyboardInterrupt("simulated preemption")

    monkeypatch.setattr(finetune_module, "save_checkpoint", crash_after_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        finetune(FinetuneConfig(output_dir=tmp_path / "resumed", **common))
    assert saved_steps == [2, 4]
    monkeypatch.setattr(finetune_module, "save_checkpoint", original_save)
    resumed = finetune(FinetuneConfig(output_dir=tmp_path / "resumed", resume=True, **common))

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    summaries = [json.loads((out / "training_summary.json").read_text()) for out in (straight, resumed)]
    assert [s["steps"] for s in summaries] == [7, 7]
    assert summaries[0]["last_train_loss"] == pytest.approx(summaries[1]["last_train_loss"], abs=1e-6)


def test_nan_mid_run_is_caught_before_the_checkpoint(tmp_path: Path, tiny_base: Path, demo_data: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # the loss is read back every log_every (10) steps, but also before each checkpoint (step 3 here):
    # the NaN of step 2 must stop the run there, name step 2, and leave no checkpoint and no output
    original_loss = torch.nn.functional.cross_entropy
    calls = []

    def nan_on_second_call(*args, **kwargs):
        calls.append(1)
        loss = original_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_on_second_call)
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 2;"):
        finetune(FinetuneConfig(output_dir=tmp_path / "out", train_data=demo_data["a_train"], base_model=str(tiny_base),
                                labels=list(LABELS), progress=False, max_steps=20, eval_every=3))
    assert len(calls) == 3  # stopped at the step-3 read-back, not at step 10
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.ckpt").exists()
    assert not list(tmp_path.glob(".out.tmp*"))


def test_metrics_go_to_mlflow_every_log_every_steps(tmp_path: Path, tiny_base: Path,
                                                     demo_data: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = {}
    for log_every in (1, 2):
        out = finetune(FinetuneConfig(output_dir=tmp_path / f"out{log_every}", train_data=demo_data["a_train"],
                                      eval_data=demo_data["a_eval"], base_model=str(tiny_base), max_steps=5,
                                      eval_every=10, log_every=log_every, progress=False, mlflow_tracking_uri=uri))
        runs[log_every] = json.loads((out / "training_summary.json").read_text())["mlflow_run_id"]
    client = MlflowClient(uri)
    every_step = {m.step: m.value for m in client.get_metric_history(runs[1], "train_loss")}
    every_other = {m.step: m.value for m in client.get_metric_history(runs[2], "train_loss")}
    assert sorted(every_step) == [1, 2, 3, 4, 5]
    assert sorted(every_other) == [2, 4, 5]  # every 2nd step, and the last
    # the logging interval changes nothing but the logging: each point is its interval's mean loss
    assert every_other[2] == pytest.approx((every_step[1] + every_step[2]) / 2, abs=1e-6)
    assert every_other[4] == pytest.approx((every_step[3] + every_step[4]) / 2, abs=1e-6)
    assert every_other[5] == pytest.approx(every_step[5], abs=1e-6)
    assert [m.step for m in client.get_metric_history(runs[2], "eval_accuracy")] == [5]
    run = client.get_run(runs[2])
    assert run.info.status == "FINISHED"
    assert run.data.params["labels"] == ",".join(LABELS)


def test_cpu_embedding_grad_buffer_changes_no_weight(tmp_path: Path, tiny_base: Path, demo_data: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    common = dict(train_data=demo_data["a_train"], eval_fraction=0.0, base_model=str(tiny_base), labels=list(LABELS),
                  max_steps=5, batch_size=16, progress=False, learning_rate=1e-2, device="cpu")
    kept = finetune(FinetuneConfig(output_dir=tmp_path / "kept", **common))
    monkeypatch.setattr(EmbeddingGradBuffer, "enabled_by_default", False)
    dense = finetune(FinetuneConfig(output_dir=tmp_path / "dense", **common))
    a, b = load_file(kept / "model.safetensors"), load_file(dense / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["bert.embeddings.word_embeddings.weight"],
                           load_file(tiny_base / "model.safetensors")["bert.embeddings.word_embeddings.weight"])


@pytest.mark.parametrize(("capability", "precision"), [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"),
                                                       ((8, 9), "bf16"), ((9, 0), "bf16")])
def test_precision_follows_compute_capability(capability: tuple[int, int], precision: str) -> None:
    assert pick_precision("cuda", capability) == precision
    assert pick_precision("cuda", capability, cpu_bf16=not precision) == precision  # the CPU has no say on CUDA
    assert pick_precision("cpu", capability, cpu_bf16=False) == "fp32"


def test_precision_reads_the_device_not_bf16_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    # Turing (7.5) reports bf16 as supported (emulated, slower than fp32): it must get fp16 with a scaler
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert pick_precision("cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert pick_precision("cuda") == "bf16"


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [(False, False, "fp32"), (True, False, "bf16"),
                                                               (False, True, "bf16"), (None, None, "fp32")])
def test_cpu_gets_bf16_only_with_bf16_instructions(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool | None,
                                                   amx: bool | None, expected: str) -> None:
    # None: a torch without the probe; emulated bf16 (plain AVX512) is slower than fp32, so it must get fp32
    for name, answer in (("_is_avx512_bf16_supported", avx512_bf16), ("_is_amx_tile_supported", amx)):
        if answer is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda answer=answer: answer)
    assert cpu_computes_bf16() is (expected == "bf16")
    assert pick_precision("cpu") == expected
    assert resolve_precision("auto", "cpu") == expected


def test_configured_precision_overrides_the_pick() -> None:
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("bf16", "cuda") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # autocast runs it on any CPU, emulated if need be
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device"):
        resolve_precision("fp16", "cpu")


def test_cpu_bf16_fine_tune_keeps_fp32_weights_and_learns(tmp_path: Path, tiny_base: Path,
                                                          demo_data: dict[str, Path]) -> None:
    # autocast runs the matmuls in bf16; the weights, the optimizer and what is saved stay fp32
    out = finetune(FinetuneConfig(output_dir=tmp_path / "bf16", train_data=demo_data["a_train"],
                                  base_model=str(tiny_base), labels=list(LABELS), precision="bf16", device="cpu",
                                  **TINY_TRAINING))
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["device"] == "cpu"
    weights = load_file(out / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
    assert summary["eval"]["accuracy"] > 0.5, summary["eval"]  # chance is 0.25, as in test_tiny_model_learns
