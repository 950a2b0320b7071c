from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoTokenizer

from training import compile as compile_module
from training.compile import CompileConfig, compile_model, parity, strict_fp32
from training.errors import ParityError
from training.inference import softmax
from training.onnx_export import OrtRunner
from training.tensorrt_build import OptimizationProfile, read_plan_metadata, sha256_file, unavailable_reason


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, tiny_trained: Path, demo_data: dict[str, Path]) -> Path:
    return compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path_factory.mktemp("art") / "v1",
                                       eval_data=demo_data["a_eval"], golden_data=demo_data["golden"]))


def test_artifact_matches_the_contract(artifact: Path, tiny_trained: Path) -> None:
    names = {p.name for p in artifact.iterdir()}
    assert {"model.onnx", "tokenizer.json", "labels.json", "serving.json", "golden.json", "compile_report.json"} <= names
    serving = json.loads((artifact / "serving.json").read_text())
    graph = onnx.load(artifact / "model.onnx").graph
    assert [i.name for i in graph.input] == serving["input_names"]
    assert [o.name for o in graph.output] == ["logits"]
    assert serving["max_length"] == 128 and serving["runtime"] == "python-onnxruntime"
    report = json.loads((artifact / "compile_report.json").read_text())
    assert report["model_onnx_sha256"] == sha256_file(artifact / "model.onnx")
    assert report["onnx_parity"]["passed"] and report["onnx_parity"]["argmax_agreement"] == 1.0
    assert report["onnx_parity"]["max_abs_diff"] <= 1e-4
    assert report["source_checkpoint"] == str(tiny_trained.resolve())


def test_onnx_has_dynamic_batch_and_sequence(artifact: Path) -> None:
    session = ort.InferenceSession(str(artifact / "model.onnx"))
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    for batch, length in ((1, 5), (3, 50), (7, 128)):
        encoded = tokenizer(["word " * 200] * batch, truncation=True, max_length=length, return_tensors="np")
        logits = session.run(None, {k: v.astype(np.int64) for k, v in encoded.items()})[0]
        assert logits.shape == (batch, 4)


def test_golden_json_is_what_the_artifact_answers(artifact: Path) -> None:
    golden = json.loads((artifact / "golden.json").read_text())
    session = ort.InferenceSession(str(artifact / "model.onnx"))
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    encoded = tokenizer(golden["texts"], truncation=True, max_length=128, padding=True, return_tensors="np")
    probabilities = softmax(session.run(None, {k: v.astype(np.int64) for k, v in encoded.items()})[0])
    np.testing.assert_allclose(probabilities, golden["probabilities"], atol=1e-5)
    labels = json.loads((artifact / "labels.json").read_text())
    assert golden["labels"] == [labels[i] for i in np.argmax(golden["probabilities"], axis=1)]
    assert len(golden["texts"]) == 16


def test_golden_defaults_to_the_first_eval_rows(tmp_path: Path, tiny_trained: Path,
                                                demo_data: dict[str, Path]) -> None:
    out = compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v", eval_data=demo_data["a_eval"],
                                      fallback_golden_rows=5))
    assert len(json.loads((out / "golden.json").read_text())["texts"]) == 5
    assert json.loads((out / "compile_report.json").read_text())["golden_source"].endswith("(first 5 rows)")


def test_tensorrt_is_reported_not_faked(artifact: Path) -> None:
    report = json.loads((artifact / "compile_report.json").read_text())["tensorrt"]
    reason = unavailable_reason()
    if reason is None:  # a GPU machine with TensorRT: the engine must exist with its metadata
        assert report["status"] == "built" and (artifact / "model.plan").exists()
    else:
        assert report == {"status": "skipped", "reason": reason}
        assert not (artifact / "model.plan").exists() and not (artifact / "tensorrt.json").exists()


def test_parity_failure_writes_nothing(tmp_path: Path, tiny_trained: Path, demo_data: dict[str, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    honest_run = compile_module.OrtRunner.__call__
    monkeypatch.setattr(compile_module.OrtRunner, "__call__", lambda self, feeds: honest_run(self, feeds) + 1e-3)
    with pytest.raises(ParityError, match=r"ONNX parity failed .* max \|Δlogit\| 0.001"):
        compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v2", eval_data=demo_data["a_eval"]))
    assert list(tmp_path.iterdir()) == []


def test_parity_figures() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert parity(reference, reference + 1e-5) == {"rows": 2, "argmax_agreement": 1.0,
                                                    "max_abs_diff": pytest.approx(1e-5)}
    assert parity(reference, reference[:, ::-1])["argmax_agreement"] == 0.0
    assert parity(reference, np.full((2, 2), np.nan))["max_abs_diff"] == float("inf")


SERVING_KEYS = {"max_length", "input_names", "output_name", "runtime", "requested_runtime", "runtime_reason",
                "core_max_batch_size"}


def test_serving_json_says_what_is_served_and_why(artifact: Path) -> None:
    serving = json.loads((artifact / "serving.json").read_text())
    assert set(serving) == SERVING_KEYS  # the old boolean tensorrt_plan is gone
    assert serving["output_name"] == "logits"
    assert (serving["runtime"], serving["requested_runtime"], serving["runtime_reason"]) == (
        "python-onnxruntime", "python-onnxruntime", "")
    assert serving["core_max_batch_size"] == 64
    report = json.loads((artifact / "compile_report.json").read_text())
    assert (report["runtime"], report["runtime_reason"]) == ("python-onnxruntime", "")


def test_tensorrt_mode_defaults_like_the_models_file(tmp_path: Path) -> None:
    assert CompileConfig(model_dir=tmp_path, output_dir=tmp_path / "o", runtime="tensorrt").tensorrt == "require"
    assert CompileConfig(model_dir=tmp_path, output_dir=tmp_path / "o", runtime="onnxruntime").tensorrt == "auto"
    with pytest.raises(ValueError, match="needs the TensorRT build"):
        CompileConfig(model_dir=tmp_path, output_dir=tmp_path / "o", runtime="tensorrt", tensorrt="off")
    with pytest.raises(ValueError, match="core_max_batch_size"):
        CompileConfig(model_dir=tmp_path, output_dir=tmp_path / "o", core_max_batch_size=0)


def test_tensorrt_runtime_degrades_to_the_onnx_core_under_auto(tmp_path: Path, tiny_trained: Path,
                                                               demo_data: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on this machine; also on a GPU worker
    out = compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v", runtime="tensorrt",
                                      tensorrt="auto", golden_data=demo_data["golden"], core_max_batch_size=16))
    serving = json.loads((out / "serving.json").read_text())
    reason = "tensorrt requested (auto): TensorRT not installed; serving the ONNX core"
    assert (serving["runtime"], serving["requested_runtime"], serving["runtime_reason"]) == (
        "onnxruntime", "tensorrt", reason)
    assert serving["core_max_batch_size"] == 16
    assert not (out / "model.plan").exists() and not (out / "tensorrt.json").exists()
    report = json.loads((out / "compile_report.json").read_text())
    assert report["tensorrt"] == {"status": "skipped", "reason": "TensorRT not installed"}
    assert (report["runtime"], report["requested_runtime"], report["runtime_reason"]) == (
        "onnxruntime", "tensorrt", reason)


class _FakeEngine:
    """Stands in for the TensorRT engine: the ONNX model's logits plus ``shift`` (TensorRT is absent here)."""

    shift = 0.0

    def __init__(self, plan_path: Path) -> None:
        assert Path(plan_path).read_bytes() == b"fake plan"
        self._ort = compile_module.OrtRunner(Path(plan_path).parent / "model.onnx", providers=["CPUExecutionProvider"])

    def __call__(self, feeds: dict) -> np.ndarray:
        logits = self._ort(feeds)
        return logits + self.shift if self.shift else logits


def _fake_build(onnx_path: Path, plan_path: Path, input_names: list[str], profile: Any) -> dict:
    Path(plan_path).write_bytes(b"fake plan")
    return {"tensorrt_version": "10.8.0.43", "gpu_name": "Fake GPU", "compute_capability": "8.9",
            "plan_sha256": sha256_file(plan_path), "precision": "fp16", "profile": profile.to_dict(),
            "input_names": list(input_names)}


@pytest.fixture()
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> type[_FakeEngine]:
    """TensorRT "available", with a fake builder and engine; the test sets ``shift`` to fail parity."""
    engine = type("Engine", (_FakeEngine,), {})
    monkeypatch.setattr(compile_module, "unavailable_reason", lambda: None)
    monkeypatch.setattr(compile_module, "build_engine", _fake_build)
    monkeypatch.setattr(compile_module, "EngineRunner", engine)
    return engine


def test_an_engine_that_passes_parity_is_served(tmp_path: Path, tiny_trained: Path, demo_data: dict[str, Path],
                                               fake_tensorrt: type[_FakeEngine]) -> None:
    fake_tensorrt.shift = 1e-3  # inside the fp16 budget (1e-2), so the engine ships
    profile = OptimizationProfile(max_batch=48, max_sequence=128)
    out = compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v", runtime="tensorrt",
                                      tensorrt="auto", golden_data=demo_data["golden"], profile=profile))
    serving = json.loads((out / "serving.json").read_text())
    assert (serving["runtime"], serving["runtime_reason"], serving["core_max_batch_size"]) == ("tensorrt", "", 48)
    metadata = read_plan_metadata(out)
    assert set(metadata) == {"tensorrt_version", "gpu_name", "compute_capability", "plan_sha256", "precision",
                             "profile", "input_names", "parity"}
    assert metadata["plan_sha256"] == sha256_file(out / "model.plan")
    assert metadata["parity"]["passed"] and metadata["parity"]["max_abs_diff"] == pytest.approx(1e-3, abs=1e-5)
    report = json.loads((out / "compile_report.json").read_text())
    assert report["tensorrt"]["status"] == "built" and report["tensorrt"]["build_seconds"] >= 0


def test_an_engine_failing_parity_is_dropped_under_auto(tmp_path: Path, tiny_trained: Path,
                                                        demo_data: dict[str, Path],
                                                        fake_tensorrt: type[_FakeEngine]) -> None:
    fake_tensorrt.shift = 0.5
    out = compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v", runtime="tensorrt",
                                      tensorrt="auto", golden_data=demo_data["golden"]))
    assert not (out / "model.plan").exists() and not (out / "tensorrt.json").exists()
    serving = json.loads((out / "serving.json").read_text())
    assert (serving["runtime"], serving["requested_runtime"]) == ("onnxruntime", "tensorrt")
    assert serving["runtime_reason"].startswith("tensorrt requested (auto): TensorRT parity failed on 16 rows")
    assert serving["runtime_reason"].endswith("; serving the ONNX core")
    trt = json.loads((out / "compile_report.json").read_text())["tensorrt"]
    assert trt["status"] == "failed_parity" and "max |Δlogit| 0.5" in trt["reason"]
    assert trt["parity"]["passed"] is False and "tensorrt_version" not in trt  # only a shipped plan has one
    assert trt["engine"]["tensorrt_version"] == "10.8.0.43"


def test_an_engine_failing_parity_fails_the_compile_under_require(tmp_path: Path, tiny_trained: Path,
                                                                  demo_data: dict[str, Path],
                                                                  fake_tensorrt: type[_FakeEngine]) -> None:
    fake_tensorrt.shift = 0.5
    with pytest.raises(ParityError, match=r"TensorRT parity failed on 16 rows: .*; nothing was written"):
        compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v", runtime="tensorrt",
                                    golden_data=demo_data["golden"]))
    assert list(tmp_path.iterdir()) == []


def test_onnx_parity_runs_on_the_cpu_provider(tmp_path: Path, tiny_trained: Path, demo_data: dict[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list = []
    real = compile_module.OrtRunner

    def spy(path: Path, **kwargs: Any) -> Any:
        seen.append(kwargs.get("providers"))
        return real(path, **kwargs)

    monkeypatch.setattr(compile_module, "OrtRunner", spy)
    compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "v", golden_data=demo_data["golden"],
                                tensorrt="off"))
    assert seen == [["CPUExecutionProvider"]]


def test_cuda_provider_gets_tf32_off(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict = {}

    class Session:
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None) -> None:
            captured["providers"] = providers

        def get_inputs(self) -> list:
            return []

    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    OrtRunner(Path("model.onnx"))
    assert captured["providers"] == [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    OrtRunner(Path("model.onnx"), providers=["CPUExecutionProvider"])
    assert captured["providers"] == ["CPUExecutionProvider"]


def test_strict_fp32_turns_tf32_off_and_restores_it() -> None:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32  # torch's flag objects do not take monkeypatch.setattr
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    try:
        with strict_fp32():
            assert not matmul.allow_tf32 and not cudnn.allow_tf32
        assert matmul.allow_tf32 and cudnn.allow_tf32
        with pytest.raises(RuntimeError), strict_fp32():
            raise RuntimeError("a failed reference run")
        assert matmul.allow_tf32 and cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def test_replay_answers_match_one_text_at_a_time(artifact: Path) -> None:
    """Replay runs each distinct text once, in length-sorted batches; answers must land on the right rows."""
    from pitcrew.pipeline.model_steps import _answers

    texts = ["refund my card", "the app crashes when I open settings after the latest update, every time",
             "refund my card", "where is my parcel", "reset password", "where is my parcel"] * 3
    labels, probs = _answers(artifact, texts, batch_size=4)
    tokenizer, runner = AutoTokenizer.from_pretrained(artifact), OrtRunner(artifact / "model.onnx")
    names = json.loads((artifact / "labels.json").read_text())
    for text, label, row in zip(texts, labels, probs, strict=True):
        logits = runner(dict(tokenizer([text], return_tensors="np")))[0]
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(row, expected, atol=1e-5)
        assert label == names[int(expected.argmax())]
