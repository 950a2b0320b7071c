"""TensorRT fp16 engine build and execution, written against NVIDIA's documented TensorRT 10 Python API.

NOT EXECUTED in this repository's CI or development machines: TensorRT's PyPI wheels fetch their libraries
from NVIDIA's own index, which is unreachable there, and no GPU image used so far carried it. The code path
is meant for the compose GPU worker (Airflow's image plus NVIDIA's TensorRT wheels); ``python -m
benchmarks.gpu_validation`` exercises it there (docs/gpu-validation.md).

A plan only runs on the TensorRT version and GPU architecture that built it, so the build returns the
metadata (TensorRT version, GPU name, compute capability, plan sha256) that is stored next to the plan as
``tensorrt.json``; :func:`read_plan_metadata` and :func:`same_tensorrt_version` let the serving side check it.
Those two import neither TensorRT nor torch, so they work on a machine that has neither.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import TrainingError


class TensorRTBuildError(TrainingError):
    """The ONNX parser or the builder failed; the message carries TensorRT's own errors."""


class PlanMetadataError(TensorRTBuildError):
    """``tensorrt.json`` next to a plan is unreadable or lacks what a version check needs."""


#: The metadata file written next to ``model.plan``.
PLAN_METADATA = "tensorrt.json"


@dataclass(frozen=True)
class OptimizationProfile:
    """min/opt/max shapes of every ``[batch, sequence]`` input; the engine accepts any shape in the range."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    min_sequence: int = 1
    opt_sequence: int = 64
    max_sequence: int = 128

    def __post_init__(self) -> None:
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self}")
        if not (1 <= self.min_sequence <= self.opt_sequence <= self.max_sequence):
            raise ValueError(f"sequence profile must satisfy 1 <= min <= opt <= max, got {self}")

    def to_dict(self) -> dict:
        return asdict(self)


def unavailable_reason() -> str | None:
    """Why a TensorRT build cannot run here, or ``None`` when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def read_plan_metadata(folder: Path) -> dict | None:
    """The ``tensorrt.json`` of an artifact folder, or ``None`` when the folder has none (no engine).

    :raises PlanMetadataError: the file is not a JSON object, or has no ``tensorrt_version`` string (a plan
        whose builder version is unknown cannot be matched with a server, so it is refused, not guessed).
    """
    path = Path(folder) / PLAN_METADATA
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise PlanMetadataError(f"{path}: not readable as JSON ({error})") from error
    if not isinstance(metadata, dict):
        raise PlanMetadataError(f"{path}: expected a JSON object, got {type(metadata).__name__}")
    version = metadata.get("tensorrt_version")
    if not isinstance(version, str) or not version.strip():
        raise PlanMetadataError(f"{path}: missing tensorrt_version (the TensorRT version that built the plan)")
    return metadata


def _release(version: str) -> tuple[str, ...] | None:
    """``major.minor.patch`` of a TensorRT version string, or ``None`` if it has fewer parts."""
    parts = str(version).strip().split("+")[0].split(".")
    return tuple(p.strip() for p in parts[:3]) if len(parts) >= 3 and all(parts[:3]) else None


def same_tensorrt_version(a: str, b: str) -> bool:
    """Whether a plan built by TensorRT ``a`` can be deserialized by TensorRT ``b``.

    A plan only runs on the TensorRT release that built it, so major, minor and patch must match; the build
    number after them (``10.8.0.43`` vs ``10.8.0``) may differ, as NVIDIA's images report it inconsistently.
    A version with fewer than three parts cannot be confirmed and compares unequal.
    """
    release_a, release_b = _release(a), _release(b)
    return release_a is not None and release_a == release_b


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_engine(onnx_path: Path, plan_path: Path, input_names: Sequence[str], profile: OptimizationProfile, *,
                 fp16: bool = True, workspace_bytes: int = 2 << 30) -> dict:
    """Parse ``onnx_path``, build a (fp16) engine with one optimisation profile and write ``plan_path``.

    :return: the metadata that belongs next to the plan (``tensorrt.json``).
    """
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    trt_profile = builder.create_optimization_profile()
    for name in input_names:
        trt_profile.set_shape(name, (profile.min_batch, profile.min_sequence),
                              (profile.opt_batch, profile.opt_sequence), (profile.max_batch, profile.max_sequence))
    config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    Path(plan_path).write_bytes(bytes(serialized))
    major, minor = torch.cuda.get_device_capability()
    return {
        "tensorrt_version": trt.__version__,
        "gpu_name": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "plan_sha256": sha256_file(plan_path),
        "precision": "fp16" if fp16 else "fp32",
        "profile": profile.to_dict(),
        "input_names": list(input_names),
    }


class EngineRunner:
    """Runs a plan on the current CUDA device using torch tensors as device buffers (no pycuda needed).

    The engine runs on a stream of its own: enqueued on torch's current (default) stream it would serialise
    behind, and block, whatever else the process runs there.
    """

    def __init__(self, plan_path: Path, output_name: str = "logits") -> None:
        import tensorrt as trt
        import torch

        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._engine is None:
            raise TensorRTBuildError(f"{plan_path} does not deserialize with TensorRT {trt.__version__} on this GPU")
        self._context = self._engine.create_execution_context()
        self._output_name = output_name
        self._stream = torch.cuda.Stream()

    def __call__(self, feeds: dict[str, Any]) -> np.ndarray:
        """``feeds``: input name -> int64 array or torch tensor ``[batch, sequence]``; returns fp32 logits."""
        import torch

        # inputs already on the GPU may still be being written on the caller's stream
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):  # copies and allocations are ordered on the engine's stream
            tensors = {name: torch.as_tensor(value).to("cuda", torch.int64).contiguous()
                       for name, value in feeds.items()}
            for name, tensor in tensors.items():
                self._context.set_input_shape(name, tuple(tensor.shape))
                self._context.set_tensor_address(name, tensor.data_ptr())
            shape = tuple(self._context.get_tensor_shape(self._output_name))
            output = torch.empty(shape, dtype=torch.float32, device="cuda")
            self._context.set_tensor_address(self._output_name, output.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise TensorRTBuildError("TensorRT execution failed")
        self._stream.synchronize()
        return output.cpu().numpy()
