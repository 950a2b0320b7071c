"""TensorRT build module: what runs everywhere, plus the GPU path (skipped without CUDA and TensorRT)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.compile import CompileConfig, compile_model
from training.precision import pick_precision
from training.tensorrt_build import (
    OptimizationProfile,
    PlanMetadataError,
    TensorRTBuildError,
    read_plan_metadata,
    same_tensorrt_version,
    sha256_file,
    unavailable_reason,
)

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
    assert read_plan_metadata(out) == metadata


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT is not installed (NVIDIA image with TensorRT needed)")
def test_engine_runs_on_its_own_stream(tmp_path: Path, tiny_trained: Path, demo_data: dict[str, Path]) -> None:
    from training.tensorrt_build import EngineRunner

    out = compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v", runtime="tensorrt",
                                      golden_data=demo_data["golden"]))
    runner = EngineRunner(out / "model.plan")
    assert runner._stream != torch.cuda.current_stream() and runner._stream != torch.cuda.default_stream()
    ids = torch.ones((2, 8), dtype=torch.int64, device="cuda")
    assert runner({name: ids for name in json.loads((out / "tensorrt.json").read_text())["input_names"]}).shape == (2, 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_finetune_on_cuda_uses_mixed_precision(tmp_path: Path, tiny_base: Path, demo_data: dict[str, Path]) -> None:
    from training.finetune import FinetuneConfig, finetune

    out = finetune(FinetuneConfig(output_dir=tmp_path / "m", train_data=demo_data["a_train"],
                                  eval_data=demo_data["a_eval"], base_model=str(tiny_base), epochs=8,
                                  batch_size=16, learning_rate=1e-2, progress=False, device="cuda"))
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["device"] == "cuda"
    assert summary["precision"] == ("bf16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16")
    assert summary["precision"] == pick_precision("cuda")
    assert summary["eval"]["accuracy"] > 0.5


def test_plan_metadata_is_read_and_checked(tmp_path: Path) -> None:
    assert read_plan_metadata(tmp_path) is None  # no engine in the artifact
    (tmp_path / "tensorrt.json").write_text(json.dumps({"tensorrt_version": "10.8.0.43", "gpu_name": "L4"}))
    assert read_plan_metadata(tmp_path) == {"tensorrt_version": "10.8.0.43", "gpu_name": "L4"}


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "not readable as JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"gpu_name": "L4"}', "missing tensorrt_version"),
    ('{"tensorrt_version": ""}', "missing tensorrt_version"),
])
def test_malformed_plan_metadata_names_the_file(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "tensorrt.json").write_text(content)
    with pytest.raises(PlanMetadataError, match=problem) as raised:
        read_plan_metadata(tmp_path)
    assert str(tmp_path / "tensorrt.json") in str(raised.value)
    assert isinstance(raised.value, TensorRTBuildError)


@pytest.mark.parametrize(("a", "b", "same"), [
    ("10.8.0.43", "10.8.0", True),
    ("10.8.0.43", "10.8.0.41", True),
    (" 10.8.0 ", "10.8.0.43", True),
    ("10.8.0", "10.7.0.23", False),
    ("10.8.0", "10.8.1", False),
    ("10.8.0", "11.8.0", False),
    ("10.8", "10.8.0", False),  # a patch level that is not known cannot be confirmed
    ("", "10.8.0", False),
])
def test_same_tensorrt_version_compares_major_minor_patch(a: str, b: str, same: bool) -> None:
    assert same_tensorrt_version(a, b) is same
    assert same_tensorrt_version(b, a) is same


def test_version_helpers_import_without_torch_or_tensorrt(tmp_path: Path) -> None:
    """The serving side imports them on machines that have neither."""
    (tmp_path / "tensorrt.json").write_text(json.dumps({"tensorrt_version": "10.8.0.43"}))
    code = ("import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None\n"
            "from training.tensorrt_build import read_plan_metadata, same_tensorrt_version\n"
            f"print(same_tensorrt_version(read_plan_metadata({str(tmp_path)!r})['tensorrt_version'], '10.8.0'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
