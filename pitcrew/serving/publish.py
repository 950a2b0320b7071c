"""Publish files into a live Triton model repository so that Triton never sees half of them.

A version folder is written under a hidden temporary name, fsynced, then renamed into place; configs are
replaced by rename too. Model code is byte-compiled before the rename: otherwise the Python backend writes
``__pycache__`` on first import, which changes the version folder and makes the next load call load the
same version again (docs/design.md, "Hot-swap").
"""

from __future__ import annotations

import compileall
import os
import shutil
import uuid
from pathlib import Path

from pitcrew.serving.errors import PublishError
from pitcrew.serving.model_config import to_pbtxt
from pitcrew.settings import REPO_ROOT

#: The Python backend every text model version runs (copied into each version folder).
DEFAULT_MODEL_PY = REPO_ROOT / "model_repository" / "textclf" / "model.py"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(folder) / name)
        _fsync_path(Path(folder))


def publish_version(
    repository: Path, model: str, version: int, artifact: Path, model_py: Path = DEFAULT_MODEL_PY
) -> Path:
    """Copy ``artifact`` plus ``model_py`` to ``<repository>/<model>/<version>`` atomically; return that path.

    Versions are immutable: an existing version folder is never overwritten.
    """
    if version < 1:
        raise PublishError(f"{model}: version must be a positive integer, got {version}")
    model_dir = Path(repository) / model
    final = model_dir / str(version)
    if final.exists():
        raise PublishError(
            f"{model}: version {version} already exists at {final}; versions are immutable, "
            "choose a new number or deploy the existing one without --artifact"
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    temp = model_dir / f".publish-{version}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(artifact, temp, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(model_py, temp / "model.py")
        if not compileall.compile_dir(str(temp), quiet=1, legacy=False):
            raise PublishError(f"{model}: {model_py} does not compile")
        _fsync_tree(temp)
        os.rename(temp, final)
        _fsync_path(model_dir)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise PublishError(f"{model}: cannot publish version {version} to {final}: {exc}") from exc
    except PublishError:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` by write-fsync-rename; readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    with open(temp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_path(path.parent)


def write_model_config(repository: Path, config) -> Path:  # config: model_config_pb2.ModelConfig
    """Write ``<repository>/<config.name>/config.pbtxt`` atomically."""
    path = Path(repository) / config.name / "config.pbtxt"
    write_atomic(path, to_pbtxt(config))
    return path
