"""Read and check a model artifact folder (docs/model-artifact.md) before it becomes a Triton version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pitcrew.serving.errors import ArtifactError
from pitcrew.serving.model_config import CoreContract

REQUIRED_FILES = ("labels.json", "serving.json", "golden.json")
MODEL_FILES = {"python-onnxruntime": "model.onnx", "onnxruntime": "model.onnx", "tensorrt": "model.plan"}


@dataclass(frozen=True)
class Golden:
    """What an artifact answers on its golden set; hot-swap verification compares the server with this."""

    texts: list[str]
    labels: list[str]
    probabilities: list[list[float]]


@dataclass(frozen=True)
class Artifact:
    path: Path
    labels: list[str]
    max_length: int
    input_names: list[str]
    runtime: str
    golden: Golden
    output_name: str = "logits"
    core_max_batch_size: int = 64
    runtime_reason: str = ""  # why the served runtime is not the requested one (``tensorrt: auto``)
    plan: dict | None = None  # tensorrt.json: TensorRT version, compute capability, profile

    @property
    def model_file(self) -> str:
        return MODEL_FILES[self.runtime]

    def core_contract(self) -> CoreContract:
        """What this artifact's ``<name>_core`` takes and gives; a plan's profile bounds its batch."""
        max_batch = self.core_max_batch_size
        if self.runtime == "tensorrt":
            max_batch = int((self.plan or {}).get("profile", {}).get("max_batch", 0))
            if max_batch < 1:
                raise ArtifactError(f"{self.path}/tensorrt.json: no profile.max_batch for the core's max_batch_size")
        return CoreContract(self.runtime, self.input_names, self.output_name, len(self.labels), max_batch)


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path.parent}: missing {path.name} (see docs/model-artifact.md)") from exc
    except ValueError as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}") from exc


def read_golden(folder: Path) -> Golden:
    raw = _json(Path(folder) / "golden.json")
    try:
        golden = Golden(
            list(raw["texts"]), list(raw["labels"]), [list(map(float, p)) for p in raw["probabilities"]]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(
            f"{folder}/golden.json: needs texts, labels and probabilities lists ({exc})"
        ) from exc
    if not golden.texts or not len(golden.texts) == len(golden.labels) == len(golden.probabilities):
        raise ArtifactError(
            f"{folder}/golden.json: texts, labels and probabilities must be non-empty and aligned"
        )
    return golden


def read_artifact(folder: Path) -> Artifact:
    """Validate ``folder`` as an artifact; raise :class:`ArtifactError` naming the first problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder {folder} does not exist")
    labels = _json(folder / "labels.json")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise ArtifactError(f"{folder}/labels.json: expected a list of at least 2 label names")
    serving = _json(folder / "serving.json")
    if not isinstance(serving, dict):
        raise ArtifactError(f"{folder}/serving.json: expected an object")
    runtime = serving.get("runtime", "python-onnxruntime")
    if runtime not in MODEL_FILES:
        raise ArtifactError(f"{folder}/serving.json: unknown runtime {runtime!r}")
    if not (folder / MODEL_FILES[runtime]).is_file():
        raise ArtifactError(f"{folder}: runtime {runtime} needs {MODEL_FILES[runtime]}, which is missing")
    if not any(folder.glob("tokenizer*.json")):
        raise ArtifactError(f"{folder}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    golden = read_golden(folder)
    unknown = sorted(set(golden.labels) - set(labels))
    if unknown:
        raise ArtifactError(f"{folder}/golden.json: labels {unknown} are not in labels.json")
    try:
        max_length = int(serving.get("max_length", 128))
        input_names = list(serving.get("input_names", ["input_ids", "attention_mask"]))
        core_max_batch = int(serving.get("core_max_batch_size", 64))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(
            f"{folder}/serving.json: bad max_length, input_names or core_max_batch_size ({exc})"
        ) from exc
    return Artifact(
        folder, labels, max_length, input_names, runtime, golden,
        output_name=str(serving.get("output_name", "logits")),
        core_max_batch_size=core_max_batch,
        runtime_reason=str(serving.get("runtime_reason") or ""),
        plan=_plan_metadata(folder) if runtime == "tensorrt" else None,
    )  # fmt: skip


def _plan_metadata(folder: Path) -> dict:
    """tensorrt.json of a plan artifact: the plan runs only on the TensorRT version that built it."""
    from training.tensorrt_build import read_plan_metadata

    try:
        plan = read_plan_metadata(folder)
    except Exception as exc:  # malformed: the message names the file
        raise ArtifactError(str(exc)) from exc
    if plan is None:
        raise ArtifactError(f"{folder}: runtime tensorrt needs tensorrt.json (the plan's TensorRT version)")
    return plan
