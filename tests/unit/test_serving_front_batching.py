"""The front model's batch path: length groups, the core's chunks, and the metrics switch (outside Triton)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from tests.unit.conftest import LABELS, _Family, _initialized, _Request, _Tensor

MIXED = [
    "refund",
    "where is my parcel",
    "my invoice was charged twice and nobody answers my emails about it " * 3,
    "the app crashes when I log in",
    "ok",
    "please change the email on my account, the old one was " + "very " * 20 + "old",
]


@pytest.mark.parametrize(
    "lengths",
    [[5], [7, 7, 7, 7], [3, 40, 4, 38, 12, 64, 5], list(np.random.default_rng(0).integers(2, 128, 64))],
)
def test_length_groups_partition_rows_by_length_within_the_slack(backend, lengths):
    module, _ = backend
    lengths = np.array(lengths)
    groups = module.length_groups(lengths, slack=1.25)
    rows = np.concatenate(groups)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    assert list(lengths[rows]) == sorted(lengths)  # ascending, each row once
    for group in groups:
        real, padded = lengths[group].sum(), lengths[group].max() * len(group)
        assert len(group) == 1 or padded <= 1.25 * real


def test_equal_lengths_are_one_group_and_extremes_two(backend):
    module, _ = backend
    assert len(module.length_groups(np.array([9] * 16))) == 1
    assert [g.tolist() for g in module.length_groups(np.array([100, 5]))] == [[1], [0]]


@pytest.fixture()
def front(backend):
    module, root = backend
    instance = _initialized(module, root, {"parameters": {"metrics_flush_s": {"string_value": "60"}}})
    yield instance
    instance.finalize()


def _one_padded_batch(model, texts: list[str]) -> np.ndarray:
    """What the front answered before length groups: the whole batch padded to its longest text."""
    encoded = model.tokenizer(texts)
    logits = model.session.run(None, {n: encoded[n] for n in model.input_names})[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_grouped_run_answers_as_one_padded_batch_with_one_call_per_group(front):
    calls = []
    session = front.session

    class Counting:
        def run(self, outputs, feeds):
            calls.append(feeds["input_ids"].shape)
            return session.run(outputs, feeds)

    expected = _one_padded_batch(front, MIXED)
    front.session = Counting()
    try:
        responses = front.execute([_Request([t]) for t in MIXED])
    finally:
        front.session = session
    probs = np.vstack([r.outputs["probabilities"] for r in responses])
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert [r.outputs["label"][0][0].decode() for r in responses] == [LABELS[i] for i in expected.argmax(axis=1)]
    widths = sorted(w for _, w in calls)
    assert 1 < len(calls) < len(MIXED) + 1 and sum(n for n, _ in calls) == len(MIXED)
    assert widths[0] < widths[-1] == front.max_length  # short groups run short


def test_core_path_sends_each_group_in_chunks_of_the_cores_max_batch(backend, front):
    module, _ = backend
    session, sent = front.session, []

    class Request:
        def __init__(self, model_name, model_version, requested_output_names, inputs):
            sent.append((model_name, model_version, len(inputs[0].array)))
            self.feeds, self.outputs = {t.name: t.array for t in inputs}, requested_output_names

        def exec(self):
            logits = session.run(self.outputs, self.feeds)[0]
            return types.SimpleNamespace(has_error=lambda: False, outputs={"logits": _Tensor("logits", logits)})

    pb = module.pb_utils
    pb.InferenceRequest = Request
    pb.get_output_tensor_by_name = lambda response, name: response.outputs[name]
    expected = _one_padded_batch(front, [MIXED[1]] * 5 + MIXED)
    front.session, front.core_model, front.core_max_batch = None, "textclf_core", 2
    try:
        probs = front._predict([MIXED[1]] * 5 + MIXED)[0]
    finally:
        front.session, front.core_model = session, None
        del pb.InferenceRequest, pb.get_output_tensor_by_name
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert all(name == "textclf_core" and version == 1 and rows <= 2 for name, version, rows in sent)
    assert sum(rows for *_, rows in sent) == 5 + len(MIXED)


def test_metrics_off_creates_no_series_and_serves(backend, tmp_path, monkeypatch):
    module, root = backend
    created: list[str] = []

    class Recording(_Family):
        def __init__(self, name, description, kind):
            super().__init__(name, description, kind)
            created.append(name)

    monkeypatch.setattr(module.pb_utils, "MetricFamily", Recording)
    config = {"parameters": {"metrics": {"string_value": "off"},
                             "inference_log_uri": {"string_value": str(tmp_path / "log")}}}  # fmt: skip
    instance = _initialized(module, root, config)
    try:
        responses = instance.execute([_Request(["my invoice"]), _Request([b""])])
        assert responses[0].error is None and responses[1].error == "text is empty"
        instance.metrics.flush()
        assert created == []
        assert instance.log.pending() == 1  # the inference log is its own switch
    finally:
        instance.finalize()


def test_metrics_off_still_refuses_a_broken_calibration(backend, tmp_path):
    import shutil

    module, root = backend
    shutil.copytree(root / "repo" / "1", tmp_path / "repo" / "1")
    (tmp_path / "repo" / "1" / "calibration.json").write_text(json.dumps({"method": "temperature"}))
    with pytest.raises(ValueError, match="calibration.json"):
        _initialized(module, tmp_path, {"parameters": {"metrics": {"string_value": "off"}}})
