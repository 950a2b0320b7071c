from __future__ import annotations

import os
from pathlib import Path

import pytest

from pitcrew.serving.errors import PublishError
from pitcrew.serving.model_config import ServingOptions, from_pbtxt, text_model_config
from pitcrew.serving.publish import DEFAULT_MODEL_PY, publish_version, write_atomic, write_model_config


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "labels.json").write_text('["a", "b"]')
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"x")
    return folder


class TestPublishVersion:
    def test_copies_artifact_and_model_code_with_bytecode(self, tmp_path, artifact):
        repo = tmp_path / "repo"
        final = publish_version(repo, "textclf", 3, artifact)
        assert final == repo / "textclf" / "3"
        assert (final / "model.onnx").read_bytes() == b"onnx"
        assert (final / "model.py").read_text() == DEFAULT_MODEL_PY.read_text()
        # Byte-compiled before the rename, so the backend's first import does not change the folder.
        assert list((final / "__pycache__").glob("model.cpython-*.pyc"))
        assert not (final / "__pycache__" / "junk.pyc").exists()
        assert not [p for p in (repo / "textclf").iterdir() if p.name.startswith(".")]

    def test_existing_version_is_never_overwritten(self, tmp_path, artifact):
        repo = tmp_path / "repo"
        publish_version(repo, "textclf", 1, artifact)
        (artifact / "model.onnx").write_bytes(b"changed")
        with pytest.raises(PublishError, match="immutable"):
            publish_version(repo, "textclf", 1, artifact)
        assert (repo / "textclf" / "1" / "model.onnx").read_bytes() == b"onnx"

    def test_non_positive_version_rejected(self, tmp_path, artifact):
        with pytest.raises(PublishError, match="positive"):
            publish_version(tmp_path, "textclf", 0, artifact)

    def test_failed_copy_leaves_no_temporary_folder(self, tmp_path):
        repo = tmp_path / "repo"
        with pytest.raises(PublishError, match="cannot publish"):
            publish_version(repo, "textclf", 1, tmp_path / "missing")
        assert not (repo / "textclf" / "1").exists()
        assert list((repo / "textclf").iterdir()) == []

    def test_model_code_that_does_not_compile_is_rejected(self, tmp_path, artifact):
        bad = tmp_path / "bad.py"
        bad.write_text("def broken(:\n")
        with pytest.raises(PublishError, match="does not compile"):
            publish_version(tmp_path / "repo", "textclf", 1, artifact, model_py=bad)
        assert not (tmp_path / "repo" / "textclf" / "1").exists()


class TestWriteAtomic:
    def test_replaces_content_and_leaves_no_temp(self, tmp_path):
        path = tmp_path / "sub" / "file.txt"
        write_atomic(path, "one")
        inode = os.stat(path).st_ino
        write_atomic(path, "two")
        assert path.read_text() == "two"
        assert os.stat(path).st_ino != inode  # replaced by rename, not rewritten in place
        assert [p.name for p in path.parent.iterdir()] == ["file.txt"]

    def test_model_config_written_where_triton_reads_it(self, tmp_path):
        config = text_model_config("textclf", 4, ServingOptions())
        path = write_model_config(tmp_path, config)
        assert path == tmp_path / "textclf" / "config.pbtxt"
        assert from_pbtxt(path.read_text()) == config
