"""Build the swap machinery for one models-file entry, and decide before any human is asked whether the
serving Triton can run an artifact at all.

Configs come from the artifact (its served runtime and metadata), not from the models file alone: with
``tensorrt: auto`` a compile may have degraded to the ONNX core, and a plan's profile bounds its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from pitcrew.models_file import ModelEntry
from pitcrew.serving.artifact import Artifact, read_artifact
from pitcrew.serving.client import TritonControl
from pitcrew.serving.errors import ArtifactError
from pitcrew.serving.model_config import ServingOptions, core_model_config, text_model_config
from pitcrew.serving.swap import HotSwapper, SwapResult


@dataclass(frozen=True)
class TritonTarget:
    """What the serving Triton can run (settings locally, the triton connection's extras in Airflow).

    :param core_standin: serve ``<name>_core`` ORT models with the Python-backend stand-in (a Triton with
        only the Python backend, as bundled here); on a real Triton only the core's platform differs.
    :param tensorrt_version: the TensorRT version of the Triton image; a plan built by another is refused.
    :param gpu: core instances on the GPU (``KIND_GPU``).
    """

    core_standin: bool = False
    tensorrt_version: str = ""
    gpu: bool = False


def serving_options(entry: ModelEntry, **overrides: object) -> ServingOptions:
    """The config options of a model: runtime and inference log root from its models-file entry."""
    values: dict = {"runtime": entry.runtime, "inference_log_uri": entry.inference_log, **overrides}
    return ServingOptions(**values)


def base_config(entry: ModelEntry, **overrides: object) -> mc.ModelConfig:
    return text_model_config(entry.name, len(entry.labels), serving_options(entry, **overrides))


def check_artifact_labels(entry: ModelEntry, artifact: Path) -> None:
    """An artifact must predict exactly the classes the models file declares, in the same order."""
    _check_labels(entry, read_artifact(artifact))


def _check_labels(entry: ModelEntry, artifact: Artifact) -> None:
    if artifact.labels != entry.labels:
        raise ArtifactError(
            f"{artifact.path}: labels {artifact.labels} differ from {entry.name}'s labels {entry.labels}"
        )


def check_servable(entry: ModelEntry, artifact: Artifact, target: TritonTarget) -> None:
    """Raise :class:`ArtifactError` naming the problem if ``target`` cannot serve ``artifact`` for ``entry``.

    Called when a version is registered (before approval) and again by every deploy.
    """
    _check_labels(entry, artifact)
    degraded = entry.runtime == "tensorrt" and entry.tensorrt_mode == "auto" and artifact.runtime == "onnxruntime"
    if artifact.runtime != entry.runtime and not degraded:
        raise ArtifactError(
            f"{entry.name}: the artifact was compiled for runtime {artifact.runtime}, the models file says "
            f"{entry.runtime}" + (f" ({artifact.runtime_reason})" if artifact.runtime_reason else "")
        )
    if artifact.runtime != "tensorrt":
        return
    if target.core_standin:
        raise ArtifactError(
            f"{entry.name}: a TensorRT plan needs Triton's TensorRT backend; this Triton runs core models "
            "with the Python stand-in (core_standin), which only serves ONNX"
        )
    from training.tensorrt_build import same_tensorrt_version

    built = str((artifact.plan or {}).get("tensorrt_version", ""))
    if not target.tensorrt_version:
        raise ArtifactError(
            f"{entry.name}: the plan was built with TensorRT {built}, but the serving Triton's TensorRT version "
            "is not configured (triton connection extra or PITCREW_TRITON_TENSORRT_VERSION)"
        )
    if not same_tensorrt_version(built, target.tensorrt_version):
        raise ArtifactError(
            f"{entry.name}: the plan was built with TensorRT {built}, the serving Triton runs TensorRT "
            f"{target.tensorrt_version}; a plan only loads on the version that built it (rebuild on a GPU "
            "worker whose TensorRT matches Triton's)"
        )


def serving_configs(
    entry: ModelEntry, artifact: Path, target: TritonTarget
) -> tuple[mc.ModelConfig, mc.ModelConfig | None]:
    """The front config and, for a pair runtime, the core config that serve ``artifact``."""
    meta = read_artifact(artifact)
    check_servable(entry, meta, target)
    if meta.runtime == "python-onnxruntime":
        return text_model_config(entry.name, len(entry.labels), serving_options(entry)), None
    contract = meta.core_contract()
    options = serving_options(entry, runtime=meta.runtime, core_max_batch_size=contract.max_batch_size)
    front = text_model_config(entry.name, len(entry.labels), options)
    core = core_model_config(entry.name, contract, options, standin=target.core_standin, gpu=target.gpu)
    return front, core


def deploy_version(
    entry: ModelEntry, swapper: HotSwapper, version: int, artifact: Path | None, target: TritonTarget
) -> SwapResult:
    """Hot-swap ``version`` in, publishing ``artifact`` as that version (with its configs) first if given."""
    if artifact is None:
        return swapper.deploy(entry.name, version)
    front, core = serving_configs(entry, Path(artifact), target)
    return swapper.deploy(entry.name, version, Path(artifact), front, core)


def make_swapper(
    entry: ModelEntry,
    triton_url: str,
    repository: Path,
    *,
    lock_timeout_s: float = 0.0,
    retries: int = 3,
) -> HotSwapper:
    client = TritonControl(triton_url, retries=retries)
    return HotSwapper(
        client,
        repository,
        latency_budget_ms=entry.thresholds.latency_p95_budget_ms,
        lock_timeout_s=lock_timeout_s,
    )


def target_from_settings() -> TritonTarget:
    from pitcrew.settings import get_settings

    s = get_settings()
    return TritonTarget(s.triton_core_standin, s.triton_tensorrt_version, s.triton_gpu)


def swapper_from_settings(model: str, *, lock_timeout_s: float = 0.0) -> tuple[ModelEntry, HotSwapper]:
    """The models-file entry and a swapper for ``model``, from pitcrew settings (no Airflow needed)."""
    from pitcrew.models_file import load_models_file
    from pitcrew.settings import get_settings

    settings = get_settings()
    entry = load_models_file(settings.models_file).get(model)
    return entry, make_swapper(
        entry, settings.triton_http_url, settings.repository_dir, lock_timeout_s=lock_timeout_s
    )
