# ruff: noqa: F811  (pytest fixtures imported from training_fixtures are re-bound as test arguments)
"""TensorRT build module: what runs everywhere, plus the GPU path (skipped without CUDA and TensorRT)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from tests.unit.training_fixtures import demo_data, tiny_base, tiny_trained  # noqa: F401
from training.compile import CompileConfig, compile_model
from training.tensorrt_build import OptimizationProfile, sha256_file, unavailable_reason

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_reason_names_a_missing_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    assert unavailable_reason() == "TensorRT not installed"


@pytest.mark.parametrize("kwargs", [{"min_batch": 0}, {"opt_batch": 64}, {"min_sequence": 200}])
def test_profile_must_be_ordered(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="profile must satisfy"):
        OptimizationProfile(**kwargs)


def test_required_engine_fails_loudly_without_tensorrt(tmp_path: Path, tiny_trained: Path,
                                                       demo_data: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(Exception, match="TensorRT engine required but cannot be built: TensorRT not installed"):
        compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v", golden_data=demo_data["golden"],
                                    tensorrt="require"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT is not installed (NVIDIA image with TensorRT needed)")
def test_tensorrt_engine_is_built_with_parity_and_metadata(tmp_path: Path, tiny_trained: Path,
                                                           demo_data: dict[str, Path]) -> None:
    out = compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v", eval_data=demo_data["a_eval"],
                                      golden_data=demo_data["golden"], tensorrt="require"))
    metadata = json.loads((out / "tensorrt.json").read_text())
    assert metadata["plan_sha256"] == sha256_file(out / "model.plan")
    assert metadata["compute_capability"] == "{}.{}".format(*torch.cuda.get_device_capability())
    assert metadata["parity"]["argmax_agreement"] >= 0.999 and metadata["parity"]["max_abs_diff"] <= 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_finetune_on_cuda_uses_mixed_precision(tmp_path: Path, tiny_base: Path, demo_data: dict[str, Path]) -> None:
    from training.finetune import FinetuneConfig, finetune

    out = finetune(FinetuneConfig(output_dir=tmp_path / "m", train_data=demo_data["a_train"],
                                  eval_data=demo_data["a_eval"], base_model=str(tiny_base), epochs=8,
                                  batch_size=16, learning_rate=1e-2, progress=False, device="cuda"))
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["device"] == "cuda"
    assert summary["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert summary["eval"]["accuracy"] > 0.5
