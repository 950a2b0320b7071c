from __future__ import annotations

from pathlib import Path

import pytest

from pitcrew.models_file import ModelsFileError, load_models_file
from pitcrew.settings import REPO_ROOT

VALID = """
models:
  - name: textclf
    train_data: data/train.parquet
    inference_log: s3://bucket/log
    feedback: /abs/feedback
    labels: [a, b]
  - name: other
    runtime: tensorrt
    train_data: x.csv
    inference_log: log
    feedback: fb
    labels: [x, y, z]
    schedule: null
"""


class TestLoadModelsFile:
    def test_repository_models_file_is_valid_and_textclf_first(self) -> None:
        models = load_models_file(REPO_ROOT / "models.yaml")
        assert models.models[0].name == "textclf"

    def test_paths_resolve_relative_to_file_and_uris_are_kept(self, tmp_path: Path) -> None:
        path = tmp_path / "models.yaml"
        path.write_text(VALID)
        models = load_models_file(path)
        textclf = models.get("textclf")
        assert textclf.train_data == str(tmp_path / "data" / "train.parquet")
        assert textclf.inference_log == "s3://bucket/log"
        assert textclf.feedback == "/abs/feedback"
        assert models.get("other").runtime == "tensorrt"
        assert models.get("other").schedule is None

    def test_unknown_model_lists_known(self, tmp_path: Path) -> None:
        path = tmp_path / "models.yaml"
        path.write_text(VALID)
        with pytest.raises(KeyError, match="declares: textclf, other"):
            load_models_file(path).get("nope")

    @pytest.mark.parametrize(
        ("mutation", "message"),
        [
            (("runtime: tensorrt", "runtime: tflite"), r"models\.1\.runtime"),
            (("labels: [a, b]", "labels: [a]"), r"models\.0\.labels"),
            (("labels: [a, b]", "labels: [a, a]"), "labels must be unique"),
            (("name: other", "name: Other-Model"), r"models\.1\.name"),
            (("name: other", "name: textclf"), "repeated: textclf"),
            (("name: other", "name: textclf_core"), r"clash .*textclf_core \(used by textclf\)"),
            (("name: other", "name: textclf__staging"), r"textclf__staging \(used by textclf\)"),
            (("runtime: tensorrt", "runtime: tensorrt\n    tensorrt: off"), "runtime tensorrt needs an engine"),
            (("    feedback: fb\n", ""), r"models\.1\.feedback: Field required"),
            (("    schedule: null", "    schedul: null"), r"models\.1\.schedul: Extra inputs"),
        ],
    )
    def test_invalid_entries_name_the_field(
        self, tmp_path: Path, mutation: tuple[str, str], message: str
    ) -> None:
        path = tmp_path / "models.yaml"
        path.write_text(VALID.replace(*mutation))
        with pytest.raises(ModelsFileError, match=message):
            load_models_file(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ModelsFileError, match="not found"):
            load_models_file(tmp_path / "absent.yaml")

    def test_bad_yaml(self, tmp_path: Path) -> None:
        path = tmp_path / "models.yaml"
        path.write_text("models: [\n")
        with pytest.raises(ModelsFileError, match="not valid YAML"):
            load_models_file(path)

    def test_empty_models_list(self, tmp_path: Path) -> None:
        path = tmp_path / "models.yaml"
        path.write_text("models: []\n")
        with pytest.raises(ModelsFileError, match="models: List should have at least 1 item"):
            load_models_file(path)
