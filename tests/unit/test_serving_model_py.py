"""model_repository/textclf/model.py outside Triton, with a stand-in for ``triton_python_backend_utils``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.integration.serving_artifacts import GOLDEN_TEXTS
from tests.unit.conftest import LABELS, LOGGED, _initialized, _Request, _series


# ``backend`` (the module loaded with a stand-in for triton_python_backend_utils) is in tests/unit/conftest.py.
@pytest.fixture()
def model(backend):
    """A fresh instance per test: its counters start at zero whatever ran before."""
    module, root = backend
    config = {"parameters": {"inference_log_uri": {"string_value": str(root / "log")},
                             "inference_log_flush_s": {"string_value": "60"}}}  # fmt: skip
    instance = _initialized(module, root, config)
    yield instance
    instance.finalize()


def test_fast_tokenizer_matches_auto_tokenizer(backend):
    from transformers import AutoTokenizer

    module, root = backend
    folder = root / "repo" / "1"
    texts = [*GOLDEN_TEXTS, "naïve café ☃ 🦀 zzqxj", "word " * 100]
    fast = module.FastTokenizer(folder, 16)(texts)
    auto = AutoTokenizer.from_pretrained(folder)(
        texts, padding=True, truncation=True, max_length=16, return_tensors="np"
    )
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(fast[name], auto[name])
    assert fast["input_ids"].shape[1] == 16


def test_answers_equal_golden_and_each_bad_request_gets_its_own_error(backend, model):
    _, root = backend
    golden = json.loads((root / "repo" / "1" / "golden.json").read_text())
    requests = [
        _Request(golden["texts"][:3], "batch"),
        _Request([b""]),
        _Request([b"\xff\xfe"]),
        _Request([golden["texts"][3]], "one"),
    ]
    responses = model.execute(requests)
    assert [r.error for r in responses] == [None, "text is empty", "text is not valid UTF-8 (byte 0)", None]
    probs = np.vstack([responses[0].outputs["probabilities"], responses[3].outputs["probabilities"]])
    np.testing.assert_allclose(probs, np.array(golden["probabilities"][:4]), atol=1e-5)
    labels = [x[0].decode() for r in (responses[0], responses[3]) for x in r.outputs["label"]]
    assert labels == golden["labels"][:4]
    assert [x[0].decode() for x in responses[0].outputs["request_id"]] == ["batch:0", "batch:1", "batch:2"]
    assert responses[3].outputs["version"][0][0] == b"1"
    assert model.log.pending() == 4
    model.metrics.flush()
    predictions = {m.labels["class"]: m.value for m in _series(model, "pitcrew_predictions_total")}
    assert predictions == {c: float(golden["labels"][:4].count(c)) for c in LABELS}
    assert sum(m.value for m in _series(model, "pitcrew_rejected_texts_total")) == 2
    assert [m.value for m in _series(model, "pitcrew_top_class_confidence_count")] == [4]
    buckets = {m.labels["le"]: m.value for m in _series(model, "pitcrew_top_class_confidence_bucket")}
    assert buckets["+Inf"] == 4 and buckets["0.3"] == int((probs.max(axis=1) <= 0.3).sum())


def test_megabyte_text_is_truncated_to_max_length(model):
    import time

    (tokens_sum,) = _series(model, "pitcrew_input_tokens_sum")
    started = time.perf_counter()
    response = model.execute([_Request(["word " * 200_000])])[0]
    assert time.perf_counter() - started < 2.0
    assert response.error is None and response.outputs["label"][0][0].decode() in LABELS
    model.metrics.flush()
    # max_length includes [CLS] and [SEP]; the metric counts content tokens
    assert tokens_sum.value == model.max_length - 2


def test_unknown_tokens_are_counted(model):
    # [UNK] is a special token of BERT tokenizers, yet it is content: the drift signal the rules watch.
    (ratio_sum,) = _series(model, "pitcrew_unknown_token_ratio_sum")
    model.execute([_Request(["invoice wrong 😡"]), _Request(["invoice wrong please"])])
    model.metrics.flush()
    # "invoice wrong 😡" is in ##vo ##ice wrong [UNK]: one unknown of five content tokens; the other has none.
    assert ratio_sum.value == pytest.approx(1 / 5)


def test_corrupt_model_fails_initialize(backend, tmp_path):
    module, root = backend
    import shutil

    shutil.copytree(root / "repo" / "1", tmp_path / "repo" / "1")
    (tmp_path / "repo" / "1" / "model.onnx").write_bytes(b"broken")
    with pytest.raises(Exception, match="(?i)protobuf|onnx"):
        module.TritonPythonModel().initialize(
            {
                "model_config": "{}",
                "model_name": "m",
                "model_version": "1",
                "model_repository": str(tmp_path / "repo"),
            }
        )


def test_inference_log_failure_is_counted_and_the_request_served(backend, tmp_path):
    module, root = backend
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder must go")
    config = {"parameters": {"inference_log_uri": {"string_value": str(blocker / "log")},
                             "inference_log_flush_s": {"string_value": "60"}}}  # fmt: skip
    instance = _initialized(module, root, config)
    response = instance.execute([_Request(["my invoice"])])[0]
    assert response.error is None
    instance.finalize()  # flushes: the write fails and is counted, nothing raises
    assert instance.metrics.log_failures.value == 1


def _calibrated_top(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T)'s top class, computed the plain way (no shared code with model.py)."""
    scaled = np.exp(np.log(probs.astype(np.float64)) / temperature)
    return (scaled / scaled.sum(axis=1, keepdims=True)).max(axis=1)


def _repo_with_calibration(root, tmp_path, calibration: str | None):
    import shutil

    shutil.copytree(root / "repo" / "1", tmp_path / "repo" / "1")
    if calibration is not None:
        (tmp_path / "repo" / "1" / "calibration.json").write_text(calibration)
    return tmp_path


# The random tiny model answers nearly uniform probabilities (~0.25): only a small T moves them visibly.
@pytest.mark.parametrize("temperature", [0.01, 0.02])
def test_calibrated_confidence_counters_apply_the_artifacts_temperature(backend, tmp_path, temperature):
    module, root = backend
    calibration = {"method": "temperature", "temperature": temperature, "fitted_on": "a_eval", "rows": 8,
                   "nll_before": 1.0, "nll_after": 0.9, "ece_before": 0.1, "ece_after": 0.05}  # fmt: skip
    repo = _repo_with_calibration(root, tmp_path, json.dumps(calibration))
    instance = _initialized(module, repo, {"parameters": {"metrics_flush_s": {"string_value": "60"}}})
    try:
        responses = instance.execute(
            [_Request(GOLDEN_TEXTS[:4]), _Request([b""]), _Request(GOLDEN_TEXTS[4:])]
        )
        probs = np.vstack([responses[0].outputs["probabilities"], responses[2].outputs["probabilities"]])
        assert instance.metrics.calibrated_count.value == 0  # nothing on the request path
        instance.metrics.flush()
        expected = _calibrated_top(probs, temperature).sum()
        # the rejected empty text is not counted; the sum is of calibrated, not raw, confidence
        assert instance.metrics.calibrated_count.value == len(GOLDEN_TEXTS)
        assert instance.metrics.calibrated_sum.value == pytest.approx(expected, rel=1e-5)
        assert abs(expected - probs.max(axis=1).sum()) > 0.05
        assert [m.labels["version"] for m in _series(instance, "pitcrew_calibrated_confidence_sum")] == ["1"]
    finally:
        instance.finalize()


def test_without_calibration_the_counters_carry_raw_confidence_and_the_log_says_so(backend, tmp_path):
    module, root = backend
    LOGGED.clear()
    repo = _repo_with_calibration(root, tmp_path, None)
    instance = _initialized(module, repo, {"parameters": {"metrics_flush_s": {"string_value": "60"}}})
    try:
        response = instance.execute([_Request(GOLDEN_TEXTS)])[0]
        instance.metrics.flush()
        raw = response.outputs["probabilities"].max(axis=1)
        assert instance.metrics.calibrated_count.value == len(GOLDEN_TEXTS)
        assert instance.metrics.calibrated_sum.value == pytest.approx(raw.sum(), rel=1e-6)
        assert len([m for m in LOGGED if "calibration.json" in m and "T = 1" in m]) == 1
        assert instance.metrics.confident is None, "no threshold: no estimate series at all"
    finally:
        instance.finalize()


def test_the_atc_counter_counts_texts_at_or_above_the_threshold(backend, tmp_path):
    module, root = backend
    repo = _repo_with_calibration(root, tmp_path, None)
    # The threshold sits at the median served confidence, so about half the texts count, whatever the model.
    probe = _initialized(module, repo, {"parameters": {"metrics_flush_s": {"string_value": "60"}}})
    try:
        confidences = probe.execute([_Request(GOLDEN_TEXTS)])[0].outputs["probabilities"].max(axis=1)
    finally:
        probe.finalize()
    threshold = float(np.median(confidences))
    calibration = {"method": "temperature", "temperature": 1.0, "fitted_on": "a_eval", "rows": 8,
                   "nll_before": 1.0, "nll_after": 1.0, "ece_before": 0.1, "ece_after": 0.1,
                   "atc_threshold": threshold}  # fmt: skip
    (repo / "repo" / "1" / "calibration.json").write_text(json.dumps(calibration))
    instance = _initialized(module, repo, {"parameters": {"metrics_flush_s": {"string_value": "60"}}})
    try:
        instance.execute([_Request(GOLDEN_TEXTS)])
        instance.metrics.flush()
        expected = int(np.count_nonzero(confidences >= threshold))
        assert 0 < expected < len(GOLDEN_TEXTS)
        assert instance.metrics.confident.value == expected
        assert instance.metrics.calibrated_count.value == len(GOLDEN_TEXTS)
    finally:
        instance.finalize()


@pytest.mark.parametrize(
    "broken",
    ["{not json", '{"method": "isotonic", "temperature": 2}', '{"method": "temperature", "temperature": 0}',
     '{"method": "temperature"}', "[1, 2]",
     '{"method": "temperature", "temperature": 1, "atc_threshold": 1.5}'],
)  # fmt: skip
def test_broken_calibration_fails_initialize_naming_the_file(backend, tmp_path, broken):
    module, root = backend
    repo = _repo_with_calibration(root, tmp_path, broken)
    with pytest.raises(ValueError, match="calibration.json"):
        _initialized(module, repo, {})
