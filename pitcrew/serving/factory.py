"""Build the swap machinery for one models-file entry from settings (CLI) or a connection (Airflow hook)."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from pitcrew.models_file import ModelEntry
from pitcrew.serving.artifact import read_artifact
from pitcrew.serving.client import TritonControl
from pitcrew.serving.errors import ArtifactError, ServingError
from pitcrew.serving.model_config import ServingOptions, text_model_config
from pitcrew.serving.swap import HotSwapper


def serving_options(entry: ModelEntry, **overrides: object) -> ServingOptions:
    """The config options of a model: runtime and inference log root from its models-file entry."""
    values: dict = {"runtime": entry.runtime, "inference_log_uri": entry.inference_log, **overrides}
    return ServingOptions(**values)


def base_config(entry: ModelEntry, **overrides: object) -> mc.ModelConfig:
    return text_model_config(entry.name, len(entry.labels), serving_options(entry, **overrides))


def check_artifact_labels(entry: ModelEntry, artifact: Path) -> None:
    """An artifact must predict exactly the classes the models file declares, in the same order."""
    labels = read_artifact(artifact).labels
    if labels != entry.labels:
        raise ArtifactError(f"{artifact}: labels {labels} differ from {entry.name}'s labels {entry.labels}")


def make_swapper(
    entry: ModelEntry,
    triton_url: str,
    repository: Path,
    *,
    lock_timeout_s: float = 0.0,
    retries: int = 3,
) -> HotSwapper:
    if entry.runtime != "python-onnxruntime":
        # The raw-text front model would call a `<name>_core` model that the protocol does not publish yet.
        raise ServingError(
            f"{entry.name}: hot-swap supports runtime python-onnxruntime only; {entry.runtime} needs the "
            f"{entry.name}_core model swapped with it, which is not implemented"
        )
    client = TritonControl(triton_url, retries=retries)
    return HotSwapper(
        client,
        repository,
        latency_budget_ms=entry.thresholds.latency_p95_budget_ms,
        lock_timeout_s=lock_timeout_s,
    )


def swapper_from_settings(model: str, *, lock_timeout_s: float = 0.0) -> tuple[ModelEntry, HotSwapper]:
    """The models-file entry and a swapper for ``model``, from pitcrew settings (no Airflow needed)."""
    from pitcrew.models_file import load_models_file
    from pitcrew.settings import get_settings

    settings = get_settings()
    entry = load_models_file(settings.models_file).get(model)
    return entry, make_swapper(
        entry, settings.triton_http_url, settings.repository_dir, lock_timeout_s=lock_timeout_s
    )
