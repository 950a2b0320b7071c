"""Generate Triton ``config.pbtxt`` files with protobuf (Triton's own ``ModelConfig`` message).

One stable model name takes raw text and answers label, probabilities, version and request id. For the
``python-onnxruntime`` runtime the Python backend runs ONNX Runtime itself; for ``onnxruntime`` and
``tensorrt`` the same Python front end tokenizes and calls a ``<name>_core`` model (Triton's ORT or TensorRT
backend) through BLS, pinned to its own version number, so clients never see the runtime. The core's config
comes from the artifact's own metadata (:class:`CoreContract`), so it cannot contradict the engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

RUNTIMES = ("python-onnxruntime", "onnxruntime", "tensorrt")
_CORE_BACKEND = {"onnxruntime": ("onnxruntime", "model.onnx"), "tensorrt": ("tensorrt", "model.plan")}


@dataclass(frozen=True)
class ServingOptions:
    """What the generated config says beyond names and shapes; defaults suit a 2-core CPU box."""

    runtime: str = "python-onnxruntime"
    max_batch_size: int = 64  # Triton rejects larger batches before the model sees them
    max_queue_delay_us: int = 1000  # dynamic batching waits at most 1 ms to fill a batch
    preferred_batch_sizes: tuple[int, ...] = ()  # empty: Triton batches whatever is queued, up to max_batch_size
    #: Instances x intra-op threads <= cores. One instance leaves a core to a version that loads beside it
    #: in a hot swap (benchmarks/hotswap.py: swap <= protocol + 1 s). For throughput, one single-threaded
    #: instance per core: two stub processes serve MiniLM up to twice as fast on two free cores, where one
    #: instance with two ORT threads gains less and on a busy machine loses (benchmarks/serving.py).
    instance_count: int = 1
    ort_threads: int = 1
    inference_log_uri: str = ""  # empty: no inference log
    inference_log_flush_s: float = 2.0
    #: The front's pitcrew_* business metrics (parameter ``metrics``: "on"/"off"). Off only to measure their
    #: cost (benchmarks/serving.py); the drift and estimated-accuracy alerts read them.
    metrics: bool = True
    core_max_batch_size: int = 64  # the front calls its core in chunks of at most this many texts
    extra_parameters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r}; expected one of {', '.join(RUNTIMES)}")
        if min(self.max_batch_size, self.instance_count, self.ort_threads, self.core_max_batch_size) < 1:
            raise ValueError("max_batch_size, core_max_batch_size, instance_count and ort_threads must be >= 1")
        if self.inference_log_flush_s <= 0:
            raise ValueError("inference_log_flush_s must be positive")
        if any(not 1 <= b <= self.max_batch_size for b in self.preferred_batch_sizes):
            raise ValueError(f"preferred_batch_sizes must lie in 1..max_batch_size, got {self.preferred_batch_sizes}")


def core_model_name(name: str) -> str:
    return f"{name}_core"


def _tensor(name: str, dtype: int, dims: list[int]) -> dict:
    return {"name": name, "data_type": dtype, "dims": dims}


def text_model_config(name: str, num_labels: int, options: ServingOptions) -> mc.ModelConfig:
    """The raw-text front model that clients call by ``name``."""
    if num_labels < 2:
        raise ValueError(f"model {name!r} needs at least 2 labels, got {num_labels}")
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=options.max_batch_size)
    config.input.add(**_tensor("text", mc.TYPE_STRING, [1]))
    config.output.add(**_tensor("label", mc.TYPE_STRING, [1]))
    config.output.add(**_tensor("probabilities", mc.TYPE_FP32, [num_labels]))
    config.output.add(**_tensor("version", mc.TYPE_STRING, [1]))
    config.output.add(**_tensor("request_id", mc.TYPE_STRING, [1]))
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.dynamic_batching.preferred_batch_size.extend(options.preferred_batch_sizes)
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=options.instance_count)
    config.version_policy.latest.num_versions = 1
    params = {
        "runtime": options.runtime,
        "ort_threads": str(options.ort_threads),
        "inference_log_uri": options.inference_log_uri,
        "inference_log_flush_s": str(options.inference_log_flush_s),
        "metrics": "on" if options.metrics else "off",
        **options.extra_parameters,
    }
    if options.runtime != "python-onnxruntime":
        params["core_model"] = core_model_name(name)
        params["core_max_batch_size"] = str(options.core_max_batch_size)
    for key, value in params.items():
        config.parameters[key].string_value = value
    return config


#: Triton's platform of each compiled runtime's core model.
CORE_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}


@dataclass(frozen=True)
class CoreContract:
    """What a core model takes and gives, read from the artifact (docs/model-artifact.md)."""

    runtime: str
    input_names: list[str]
    output_name: str
    num_labels: int
    max_batch_size: int  # for a TensorRT plan: its optimisation profile's maximum batch


def core_model_config(
    name: str,
    contract: CoreContract,
    options: ServingOptions,
    *,
    standin: bool = False,
    gpu: bool = False,
) -> mc.ModelConfig:
    """The ids-in, logits-out ``<name>_core`` model run by Triton's ORT or TensorRT backend.

    :param standin: a Python-backend model with the identical I/O contract that runs the same ONNX file
        with ONNX Runtime (``model_repository/core_standin``), for a Triton that only has the Python backend.
    :param gpu: instances on the GPU (always so for a TensorRT plan).
    """
    if contract.runtime not in _CORE_BACKEND:
        raise ValueError(
            f"runtime {contract.runtime!r} has no core model; the Python backend runs ONNX itself"
        )
    if standin and contract.runtime == "tensorrt":
        raise ValueError("a TensorRT plan runs only on Triton's TensorRT backend; there is no stand-in for it")
    backend, filename = _CORE_BACKEND[contract.runtime]
    config = mc.ModelConfig(name=core_model_name(name), max_batch_size=contract.max_batch_size)
    if standin:
        config.backend = "python"
        config.parameters["standin_for"].string_value = CORE_PLATFORMS[contract.runtime]
        config.parameters["ort_threads"].string_value = str(options.ort_threads)
    else:
        config.platform = CORE_PLATFORMS[contract.runtime]
        config.backend = backend
        config.default_model_filename = filename
    for input_name in contract.input_names:
        config.input.add(**_tensor(input_name, mc.TYPE_INT64, [-1]))
    config.output.add(**_tensor(contract.output_name, mc.TYPE_FP32, [contract.num_labels]))
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    on_gpu = contract.runtime == "tensorrt" or (gpu and not standin)
    kind = mc.ModelInstanceGroup.KIND_GPU if on_gpu else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=options.instance_count)
    config.version_policy.latest.num_versions = 1
    return config


def staging_model_name(name: str) -> str:
    """Where a new version is verified: a model name no client calls (docs/design.md, "Hot-swap")."""
    return f"{name}__staging"


def staging_config(config: mc.ModelConfig, version: int) -> mc.ModelConfig:
    """``config`` renamed to the staging model, serving only ``version``, writing no inference log."""
    staged = set_version_policy(config, [version])
    staged.name = staging_model_name(config.name)
    # Golden-set checks are not user traffic: they must not reach the drift window.
    if "inference_log_uri" in staged.parameters:
        del staged.parameters["inference_log_uri"]
    return staged


def canary_model_name(name: str) -> str:
    """Where a weighted rollout's challenger serves its share: reached only through the champion's front."""
    return f"{name}__canary"


def canary_config(config: mc.ModelConfig, version: int) -> mc.ModelConfig:
    """``config`` renamed to the challenger of a weighted rollout, serving only ``version``. It answers real
    users, so it keeps the inference log, and its metrics and log rows name the model clients call
    (parameter ``serves_as``)."""
    canary = set_version_policy(config, [version])
    canary.name = canary_model_name(config.name)
    canary.parameters["serves_as"].string_value = config.name
    return canary


def core_of(config: mc.ModelConfig) -> str | None:
    """The core model a front config calls, or None for a one-model runtime."""
    return config.parameters["core_model"].string_value if "core_model" in config.parameters else None


def set_version_policy(config: mc.ModelConfig, versions: list[int]) -> mc.ModelConfig:
    """A copy of ``config`` that serves exactly ``versions`` (the hot-swap pins old+new, then new)."""
    if not versions:
        raise ValueError("a version policy needs at least one version")
    pinned = mc.ModelConfig()
    pinned.CopyFrom(config)
    pinned.version_policy.Clear()
    pinned.version_policy.specific.versions.extend(sorted(set(versions)))
    return pinned


def to_pbtxt(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def from_pbtxt(text: str) -> mc.ModelConfig:
    """Parse a ``config.pbtxt``; raises ``ValueError`` naming the problem if it is not a valid ModelConfig."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"invalid config.pbtxt: {exc}") from exc


def to_load_json(config: mc.ModelConfig) -> str:
    """The config as the JSON string Triton's load API accepts as ``parameters.config``."""
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))
