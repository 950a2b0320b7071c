"""Publish files into a live Triton model repository so that Triton never sees half of them.

A version folder is written under a hidden temporary name, fsynced, then renamed into place; configs are
replaced by rename too. Model code is byte-compiled before the rename: otherwise the Python backend writes
``__pycache__`` on first import, which changes the version folder and makes the next load call load the
same version again (docs/design.md, "Hot-swap").
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from pitcrew.serving.errors import PublishError
from pitcrew.serving.model_config import from_pbtxt, to_pbtxt
from pitcrew.settings import REPO_ROOT

#: The Python backend every text model version runs (copied into each version folder).
DEFAULT_MODEL_PY = REPO_ROOT / "model_repository" / "textclf" / "model.py"
#: The Python-backend stand-in of a ``<name>_core`` ORT model, for a Triton without the ORT backend.
STANDIN_MODEL_PY = REPO_ROOT / "model_repository" / "core_standin" / "model.py"


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


def _publish(repository: Path, model: str, version: int, fill: Callable[[Path], None]) -> Path:
    """Create ``<repository>/<model>/<version>`` by filling a hidden temporary folder, then one rename.

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
        fill(temp)
        if not compileall.compile_dir(str(temp), quiet=1, legacy=False):
            raise PublishError(f"{model}: the model code in {temp} does not compile")
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


def publish_version(
    repository: Path,
    model: str,
    version: int,
    artifact: Path,
    model_py: Path = DEFAULT_MODEL_PY,
    *,
    exclude: Sequence[str] = (),
) -> Path:
    """Copy ``artifact`` (less ``exclude``) plus ``model_py`` to ``<repository>/<model>/<version>`` atomically."""

    def fill(temp: Path) -> None:
        shutil.copytree(artifact, temp, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *exclude))
        shutil.copy2(model_py, temp / "model.py")

    return _publish(repository, model, version, fill)


def publish_core(
    repository: Path, core: str, version: int, model_file: Path, model_py: Path | None = None
) -> Path:
    """Publish a core version: the network file alone (plus the stand-in's ``model.py`` where one runs it)."""

    def fill(temp: Path) -> None:
        temp.mkdir()
        shutil.copy2(model_file, temp / model_file.name)
        if model_py is not None:
            shutil.copy2(model_py, temp / "model.py")

    return _publish(repository, core, version, fill)


def link_version(source: Path, target: Path) -> None:
    """Make ``target`` a copy of the version folder ``source`` by hard links (no second copy of the model)."""
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:  # another file system: hard links impossible, copy instead
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


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


def version_configs_path(repository: Path, model: str, version: int) -> Path:
    return Path(repository) / ".pitcrew" / "configs" / model / f"{version}.json"


def save_version_configs(repository: Path, model: str, version: int, front, core=None) -> None:
    """Keep the configs a version was published with: a rollback may cross layouts (one model vs a pair)."""
    payload = {"front": to_pbtxt(front), "core": to_pbtxt(core) if core is not None else None}
    write_atomic(version_configs_path(repository, model, version), json.dumps(payload))


def load_version_configs(repository: Path, model: str, version: int):
    """``(front, core or None)`` as published, or None for a version published before configs were kept."""
    path = version_configs_path(repository, model, version)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return from_pbtxt(raw["front"]), (from_pbtxt(raw["core"]) if raw.get("core") else None)
