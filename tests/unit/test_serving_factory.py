from __future__ import annotations

import json
from pathlib import Path

import pytest

from pitcrew.models_file import ModelEntry
from pitcrew.serving.artifact import read_artifact
from pitcrew.serving.errors import ArtifactError
from pitcrew.serving.factory import (
    TritonTarget,
    base_config,
    check_artifact_labels,
    check_servable,
    make_swapper,
    serving_configs,
)
from tests.unit.conftest import write_artifact


def entry(**overrides) -> ModelEntry:
    values = {
        "name": "textclf",
        "train_data": "/d/train.parquet",
        "inference_log": "s3://logs/textclf",
        "feedback": "/d/feedback",
        "labels": ["a", "b"],
        "thresholds": {"latency_p95_budget_ms": 123},
    }
    return ModelEntry(**{**values, **overrides})


class TestFactory:
    def test_base_config_from_models_file_entry(self):
        config = base_config(entry())
        assert config.name == "textclf"
        assert list(config.output[1].dims) == [2]
        assert config.parameters["inference_log_uri"].string_value == "s3://logs/textclf"

    def test_swapper_uses_the_models_latency_budget(self, tmp_path):
        swapper = make_swapper(entry(), "127.0.0.1:1", tmp_path)
        assert swapper.latency_budget_ms == 123 and swapper.repository == Path(tmp_path)


    def test_artifact_labels_must_match_models_file(self, tmp_path):
        folder = write_artifact(tmp_path / "a", labels=("b", "a"))
        (folder / "golden.json").write_text(
            json.dumps({"texts": ["x"], "labels": ["a"], "probabilities": [[0.1, 0.9]]})
        )
        with pytest.raises(ArtifactError, match=r"labels \['b', 'a'\] differ"):
            check_artifact_labels(entry(), folder)
        check_artifact_labels(entry(labels=["b", "a"]), folder)


def plan_artifact(folder: Path, *, built_with: str = "10.8.0.43", max_batch: int = 32) -> Path:
    """A TensorRT artifact as compile writes it: a plan file (not an engine) and its real metadata file."""
    write_artifact(folder, runtime="tensorrt")
    (folder / "model.plan").write_bytes(b"not an engine: only the metadata is read")
    serving = json.loads((folder / "serving.json").read_text())
    (folder / "serving.json").write_text(json.dumps({**serving, "core_max_batch_size": 64}))
    metadata = {
        "tensorrt_version": built_with, "gpu_name": "NVIDIA L4", "compute_capability": "8.9",
        "profile": {"min_batch": 1, "opt_batch": 8, "max_batch": max_batch, "min_sequence": 1,
                    "opt_sequence": 64, "max_sequence": 128},
    }  # fmt: skip
    (folder / "tensorrt.json").write_text(json.dumps(metadata))
    return folder


GPU_TRITON = TritonTarget(core_standin=False, tensorrt_version="10.8.0", gpu=True)


class TestServable:
    def test_core_config_max_batch_is_the_engine_profiles_maximum(self, tmp_path):
        folder = plan_artifact(tmp_path / "a", max_batch=24)
        front, core = serving_configs(entry(runtime="tensorrt"), folder, GPU_TRITON)
        profile = json.loads((folder / "tensorrt.json").read_text())["profile"]
        assert core.max_batch_size == profile["max_batch"] == 24  # not serving.json's 64, not the front's
        assert front.parameters["core_max_batch_size"].string_value == "24"
        assert core.platform == "tensorrt_plan"
        assert [i.name for i in core.input] == read_artifact(folder).input_names

    def test_plan_from_another_tensorrt_is_refused_naming_both_versions(self, tmp_path):
        folder = plan_artifact(tmp_path / "a", built_with="10.9.0.34")
        with pytest.raises(ArtifactError, match=r"built with TensorRT 10\.9\.0\.34.*runs TensorRT 10\.8\.0"):
            check_servable(entry(runtime="tensorrt"), read_artifact(folder), GPU_TRITON)

    def test_same_release_with_another_build_number_is_accepted(self, tmp_path):
        folder = plan_artifact(tmp_path / "a", built_with="10.8.0.43")
        assert check_servable(entry(runtime="tensorrt"), read_artifact(folder), GPU_TRITON) is None
        # The build number is all that may differ: another patch release is refused.
        other = plan_artifact(tmp_path / "b", built_with="10.8.1.43")
        with pytest.raises(ArtifactError, match=r"built with TensorRT 10\.8\.1\.43"):
            check_servable(entry(runtime="tensorrt"), read_artifact(other), GPU_TRITON)

    def test_unknown_serving_tensorrt_version_is_refused(self, tmp_path):
        folder = plan_artifact(tmp_path / "a")
        with pytest.raises(ArtifactError, match="TensorRT version is not configured"):
            check_servable(entry(runtime="tensorrt"), read_artifact(folder), TritonTarget())

    def test_plan_without_metadata_is_refused(self, tmp_path):
        folder = plan_artifact(tmp_path / "a")
        (folder / "tensorrt.json").unlink()
        with pytest.raises(ArtifactError, match="needs tensorrt.json"):
            read_artifact(folder)

    def test_plan_on_the_python_only_triton_is_refused(self, tmp_path):
        folder = plan_artifact(tmp_path / "a")
        with pytest.raises(ArtifactError, match="needs Triton's TensorRT backend"):
            check_servable(entry(runtime="tensorrt"), read_artifact(folder), TritonTarget(core_standin=True))

    def test_auto_accepts_the_onnx_core_it_degraded_to(self, tmp_path):
        folder = write_artifact(tmp_path / "a", runtime="onnxruntime")
        serving = json.loads((folder / "serving.json").read_text())
        reason = "tensorrt requested (auto): TensorRT not installed; serving the ONNX core"
        (folder / "serving.json").write_text(json.dumps({**serving, "runtime_reason": reason}))
        front, core = serving_configs(entry(runtime="tensorrt", tensorrt="auto"), folder, TritonTarget(True))
        assert core.backend == "python" and core.parameters["standin_for"].string_value == "onnxruntime_onnx"
        with pytest.raises(ArtifactError, match="compiled for runtime onnxruntime.*TensorRT not installed"):
            check_servable(entry(runtime="tensorrt"), read_artifact(folder), GPU_TRITON)  # require: no

    def test_runtime_mismatch_is_refused(self, tmp_path):
        folder = write_artifact(tmp_path / "a", runtime="python-onnxruntime")
        with pytest.raises(ArtifactError, match="compiled for runtime python-onnxruntime, the models file says onnxruntime"):
            check_servable(entry(runtime="onnxruntime"), read_artifact(folder), TritonTarget(True))

    def test_one_model_runtime_has_no_core(self, tmp_path):
        front, core = serving_configs(entry(), write_artifact(tmp_path / "a"), TritonTarget(True))
        assert core is None and "core_model" not in front.parameters
