from __future__ import annotations

import json

import pytest

from pitcrew.serving.artifact import read_artifact, read_golden
from pitcrew.serving.errors import ArtifactError
from tests.unit.conftest import write_artifact


class TestReadArtifact:
    def test_valid_artifact(self, tmp_path):
        artifact = read_artifact(write_artifact(tmp_path / "a"))
        assert artifact.labels == ["a", "b"] and artifact.max_length == 32
        assert artifact.input_names == ["input_ids", "attention_mask"]
        assert artifact.golden.labels == ["a", "b"] and artifact.golden.probabilities[1] == [0.2, 0.8]

    @pytest.mark.parametrize(
        ("breakage", "message"),
        [
            (lambda f: (f / "labels.json").unlink(), "missing labels.json"),
            (lambda f: (f / "labels.json").write_text('["only"]'), "at least 2"),
            (lambda f: (f / "serving.json").write_text("{not json"), "not valid JSON"),
            (lambda f: (f / "model.onnx").unlink(), "needs model.onnx"),
            (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer"),
            (lambda f: (f / "golden.json").write_text('{"texts": []}'), "golden.json"),
            (
                lambda f: (f / "golden.json").write_text(
                    json.dumps({"texts": ["x"], "labels": ["zzz"], "probabilities": [[1.0, 0.0]]})
                ),
                "not in labels.json",
            ),
        ],
    )
    def test_problems_are_named(self, tmp_path, breakage, message):
        folder = write_artifact(tmp_path / "a")
        breakage(folder)
        with pytest.raises(ArtifactError, match=message):
            read_artifact(folder)

    def test_tensorrt_needs_a_plan(self, tmp_path):
        with pytest.raises(ArtifactError, match="needs model.plan"):
            read_artifact(write_artifact(tmp_path / "a", runtime="tensorrt"))

    def test_missing_folder(self, tmp_path):
        with pytest.raises(ArtifactError, match="does not exist"):
            read_artifact(tmp_path / "nope")

    def test_golden_misaligned(self, tmp_path):
        folder = write_artifact(tmp_path / "a")
        (folder / "golden.json").write_text(
            json.dumps({"texts": ["x", "y"], "labels": ["a"], "probabilities": [[1, 0]]})
        )
        with pytest.raises(ArtifactError, match="aligned"):
            read_golden(folder)
