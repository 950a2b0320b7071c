# ruff: noqa: F811  (pytest fixtures imported from training_fixtures are re-bound as test arguments)
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from transformers import AutoTokenizer

from tests.unit.training_fixtures import demo_data, tiny_base, tiny_trained  # noqa: F401
from training import compile as compile_module
from training.compile import CompileConfig, compile_model, parity
from training.errors import ParityError
from training.inference import softmax
from training.tensorrt_build import sha256_file, unavailable_reason


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
