"""Compile a fine-tuned model into the serving artifact of docs/model-artifact.md.

ONNX export (dynamic batch and sequence) with parity against torch on the eval rows: 100% argmax agreement
and max |Δlogit| <= 1e-4 in fp32 (ONNX Runtime's CPU provider against torch with TF32 off, so neither side
rounds). On a CUDA machine with TensorRT, also an fp16 engine with parity (>= 99.9% agreement, max |Δlogit|
<= 1e-2) and its version/GPU metadata; otherwise the report says why it was skipped, and no engine is faked.

Which runtime the artifact is served with (``serving.json`` ``runtime``) follows ``runtime`` and ``tensorrt``:
runtime ``tensorrt`` with ``tensorrt=require`` fails when no engine passes parity; with ``tensorrt=auto`` it
degrades to the ONNX core (``onnxruntime``) and says why in ``runtime_reason``. Everything is written under a
temporary name and renamed into place; a failure raises (``ParityError``, ``TensorRTBuildError``) and leaves
nothing deployable behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from training.calibration import read_calibration, write_calibration
from training.data import LabelledText, load_labelled
from training.errors import DataError, ParityError
from training.inference import encode, load_classifier, model_labels, softmax
from training.onnx_export import OUTPUT_NAME, OrtRunner, export_onnx
from training.tensorrt_build import (
    PLAN_METADATA,
    EngineRunner,
    OptimizationProfile,
    TensorRTBuildError,
    build_engine,
    sha256_file,
    unavailable_reason,
)

#: The serving runtimes written into serving.json, and the TensorRT build modes.
Runtime = Literal["python-onnxruntime", "onnxruntime", "tensorrt"]
TensorRTMode = Literal["auto", "off", "require"]


@dataclass
class CompileConfig:
    """Inputs and tolerances; the tolerances are the issue's parity budget.

    ``metadata["help"]`` of each field is its help in ``python -m training compile`` (flags built from this
    class by ``transformers.HfArgumentParser``); ``profile`` has its own flags there (``--trt-batch``,
    ``--trt-sequence``).
    """

    model_dir: Path = field(metadata={"help": "fine-tuned model folder"})
    output_dir: Path = field(metadata={"help": "artifact folder (docs/model-artifact.md)"})
    eval_data: Path | None = field(
        default=None, metadata={"help": "rows to check parity on; the golden set is used too"}
    )
    golden_data: Path | None = field(
        default=None,
        metadata={
            "help": "golden set, what golden.json answers for (hot-swap verification); "
            "default: the first eval rows"
        },
    )
    max_length: int = field(
        default=128, metadata={"help": "tokenizer truncation length (goes into serving.json)"}
    )
    opset: int = field(default=18, metadata={"help": "ONNX opset"})
    runtime: Runtime = field(
        default="python-onnxruntime",
        metadata={"help": "requested serving runtime (serving.json says the one served and why it differs)"},
    )
    tensorrt: TensorRTMode | None = field(
        default=None,
        metadata={
            "help": "auto: build an engine when CUDA and TensorRT exist (runtime tensorrt falls back to the "
            "ONNX core, reason recorded); off; require: fail if none passes parity. "
            "Default: require for runtime tensorrt, auto otherwise"
        },
    )
    profile: OptimizationProfile = field(
        default_factory=OptimizationProfile, metadata={"help": "TensorRT optimisation profile"}
    )
    core_max_batch_size: int = field(
        default=64,
        metadata={"help": "max_batch_size of the <name>_core model (serving.json); TensorRT: the profile's max batch"},
    )
    parity_rows: int = field(
        default=1024,
        metadata={"help": "cap on parity rows, so compile time stays bounded on large eval sets"},
    )
    fallback_golden_rows: int = field(
        default=64,
        metadata={"help": "golden.json from this many first eval rows when no golden set is given"},
    )
    parity_batch_size: int = field(default=32, metadata={"help": "batch size of the parity runs"})
    onnx_max_abs_diff: float = field(
        default=1e-4, metadata={"help": "ONNX parity: max |Δlogit| against torch"}
    )
    onnx_min_agreement: float = field(default=1.0, metadata={"help": "ONNX parity: min argmax agreement"})
    trt_max_abs_diff: float = field(default=1e-2, metadata={"help": "TensorRT fp16 parity: max |Δlogit|"})
    trt_min_agreement: float = field(
        default=0.999, metadata={"help": "TensorRT fp16 parity: min argmax agreement"}
    )
    text_column: str = field(default="text", metadata={"help": "name of the text column"})
    label_column: str = field(default="label", metadata={"help": "name of the label column"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output folder"})

    def __post_init__(self) -> None:
        if self.tensorrt is None:  # the models file's default (ModelEntry.tensorrt_mode)
            self.tensorrt = "require" if self.runtime == "tensorrt" else "auto"
        if self.tensorrt not in get_args(TensorRTMode):
            raise ValueError(f"tensorrt must be auto, off or require, got {self.tensorrt!r}")
        if self.runtime not in get_args(Runtime):
            raise ValueError(f"unknown runtime {self.runtime!r}")
        if self.runtime == "tensorrt" and self.tensorrt == "off":
            raise ValueError("runtime 'tensorrt' needs the TensorRT build (tensorrt != off)")
        if self.core_max_batch_size < 1:
            raise ValueError(f"core_max_batch_size must be >= 1, got {self.core_max_batch_size}")


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Argmax agreement and max |Δlogit| between two ``[n, labels]`` logit arrays."""
    if reference.shape != candidate.shape:
        raise ParityError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    if not np.all(np.isfinite(candidate)):
        return {"rows": int(len(reference)), "argmax_agreement": 0.0, "max_abs_diff": float("inf")}
    agreement = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if len(reference) else 1.0
    diff = float(np.max(np.abs(reference - candidate))) if len(reference) else 0.0
    return {"rows": int(len(reference)), "argmax_agreement": agreement, "max_abs_diff": diff}


def _judge(name: str, figures: dict, min_agreement: float, max_abs_diff: float) -> str | None:
    """Record the budget and the verdict in ``figures``; return why it failed, or ``None`` when it passed."""
    figures.update(min_agreement=min_agreement, max_abs_diff_allowed=max_abs_diff,
                   passed=figures["argmax_agreement"] >= min_agreement and figures["max_abs_diff"] <= max_abs_diff)
    if figures["passed"]:
        return None
    return (f"{name} parity failed on {figures['rows']} rows: argmax agreement {figures['argmax_agreement']:.4%} "
            f"(need >= {min_agreement:.2%}), max |Δlogit| {figures['max_abs_diff']:.3g} (allowed {max_abs_diff:g})")


def _check(name: str, figures: dict, min_agreement: float, max_abs_diff: float) -> None:
    failure = _judge(name, figures, min_agreement, max_abs_diff)
    if failure is not None:
        raise ParityError(f"{failure}; nothing was written")


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for torch's CUDA matmuls and convolutions inside the block, restored afterwards.

    An fp32 reference must be fp32: with TF32 (cuDNN's default, and a common global switch) Ampere+ GPUs
    round matmul inputs to 10 mantissa bits, and the 1e-4 logit budget fails against an exact ONNX run.
    """
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _batched(run: Any, tokenizer: Any, texts: list[str], config: CompileConfig) -> np.ndarray:
    out = [run(encode(tokenizer, texts[i:i + config.parity_batch_size], max_length=config.max_length))
           for i in range(0, len(texts), config.parity_batch_size)]
    return np.concatenate(out)


def compile_model(config: CompileConfig) -> Path:
    """Export, check parity, build TensorRT where asked and possible, and publish the artifact; return its path."""
    import torch

    started = time.monotonic()
    output_dir = Path(config.output_dir)
    if output_dir.exists() and not config.overwrite:
        raise FileExistsError(f"output folder {output_dir} already exists (pass overwrite)")
    skip_reason = _preflight(config)
    # fine-tune's fit on its eval set, carried into the artifact; read (and validated) before the slow export.
    # None: fine-tuned without an eval set, and the serving front uses raw confidence (T = 1)
    calibration = read_calibration(config.model_dir)
    model, tokenizer = load_classifier(config.model_dir)
    model.eval()
    labels = model_labels(config.model_dir, model)
    read = lambda p: load_labelled(p, text_column=config.text_column, label_column=config.label_column)  # noqa: E731
    golden = read(config.golden_data) if config.golden_data else None
    parity_data = read(config.eval_data) if config.eval_data else golden
    if parity_data is None or not len(parity_data):
        raise DataError("compile needs eval_data or golden_data rows to check parity on")
    parity_texts = parity_data.texts[: config.parity_rows] + (golden.texts if golden and config.eval_data else [])
    if golden is None:  # the artifact contract always carries golden.json; the report says where it came from
        n = config.fallback_golden_rows
        golden = LabelledText(parity_data.texts[:n], parity_data.labels[:n], f"{parity_data.source} (first {n} rows)")

    def torch_run(batch: dict) -> np.ndarray:
        with torch.inference_mode(), strict_fp32():
            return model(**batch).logits.float().cpu().numpy()

    tmp = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        input_names = export_onnx(model, tokenizer, tmp / "model.onnx", opset=config.opset)
        # the CPU provider computes exact fp32 on any machine; parity and golden.json are judged on it
        ort_run = OrtRunner(tmp / "model.onnx", providers=["CPUExecutionProvider"])
        reference = _batched(torch_run, tokenizer, parity_texts, config)
        onnx_figures = parity(reference, _batched(ort_run, tokenizer, parity_texts, config))
        _check("ONNX", onnx_figures, config.onnx_min_agreement, config.onnx_max_abs_diff)
        trt_report = _tensorrt(tmp, input_names, tokenizer, parity_texts, reference, config, skip_reason)
        runtime, runtime_reason = served_runtime(config, trt_report)
        tokenizer.save_pretrained(tmp)
        (tmp / "labels.json").write_text(json.dumps(labels))
        if calibration is not None:
            write_calibration(tmp, calibration)
        serving = serving_metadata(config, input_names, runtime, runtime_reason)
        (tmp / "serving.json").write_text(json.dumps(serving, indent=2))
        golden.require_known_labels(labels)
        _write_golden(tmp / "golden.json", golden, _batched(ort_run, tokenizer, golden.texts, config), labels)
        report = _report(config, onnx_figures, trt_report, tmp, started)
        report.update(golden_source=golden.source, runtime=runtime, requested_runtime=config.runtime,
                      runtime_reason=runtime_reason,
                      calibration=calibration.to_dict() if calibration is not None else None)
        (tmp / "compile_report.json").write_text(json.dumps(report, indent=2, default=str))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def _preflight(config: CompileConfig) -> str | None:
    """Why no engine will be built here (``None``: one will); checked before the slow export.

    :raises TensorRTBuildError: an engine is required and this machine cannot build one.
    :raises ValueError: the TensorRT profile does not cover what compile feeds the engine.
    """
    if config.tensorrt == "off":
        return "disabled (tensorrt=off)"
    reason = unavailable_reason()
    if reason is not None:
        if config.tensorrt == "require":
            raise TensorRTBuildError(f"TensorRT engine required but cannot be built: {reason}")
        return reason
    if config.max_length > config.profile.max_sequence or config.parity_batch_size > config.profile.max_batch:
        raise ValueError(f"TensorRT profile {config.profile} does not cover max_length {config.max_length} "
                         f"and parity batch {config.parity_batch_size}")
    return None


def _tensorrt(folder: Path, input_names: list[str], tokenizer: Any, texts: list[str], reference: np.ndarray,
              config: CompileConfig, skip_reason: str | None) -> dict:
    """Build and check the engine when possible; a reason to skip is reported, never papered over.

    An engine that fails parity raises under ``require``; under ``auto`` it is deleted and reported as
    ``failed_parity`` (the ONNX model, whose parity passed, is still deployable).
    """
    if skip_reason is not None:
        return {"status": "skipped", "reason": skip_reason}
    plan = folder / "model.plan"
    build_started = time.monotonic()
    metadata = build_engine(folder / "model.onnx", plan, input_names, config.profile)
    build_seconds = round(time.monotonic() - build_started, 3)
    figures = parity(reference, _batched(EngineRunner(plan), tokenizer, texts, config))
    failure = _judge("TensorRT", figures, config.trt_min_agreement, config.trt_max_abs_diff)
    if failure is not None:
        if config.tensorrt == "require":
            raise ParityError(f"{failure}; nothing was written")
        plan.unlink()
        # the engine's metadata is nested, so nobody mistakes it for a shipped plan's
        return {"status": "failed_parity", "reason": failure, "parity": figures, "build_seconds": build_seconds,
                "engine": metadata}
    metadata["parity"] = figures
    (folder / PLAN_METADATA).write_text(json.dumps(metadata, indent=2))
    return {"status": "built", **metadata, "build_seconds": build_seconds}


def served_runtime(config: CompileConfig, trt_report: dict) -> tuple[str, str]:
    """The runtime the artifact is served with, and why it is not the requested one (``""`` when it is).

    Only runtime ``tensorrt`` can degrade: without an engine that passed parity, the same front model
    serves the ONNX core instead (``tensorrt=require`` has raised before this point).
    """
    if config.runtime != "tensorrt" or trt_report.get("status") == "built":
        return config.runtime, ""
    reason = f"tensorrt requested ({config.tensorrt}): {trt_report.get('reason')}; serving the ONNX core"
    return "onnxruntime", reason


def serving_metadata(config: CompileConfig, input_names: list[str], runtime: str, runtime_reason: str) -> dict:
    """``serving.json`` (docs/model-artifact.md): what the serving side needs to configure the version."""
    # a TensorRT core cannot take a batch beyond its profile; an ONNX core takes what it is configured for
    core_max_batch = config.profile.max_batch if runtime == "tensorrt" else config.core_max_batch_size
    return {
        "max_length": config.max_length,
        "input_names": list(input_names),
        "output_name": OUTPUT_NAME,
        "runtime": runtime,
        "requested_runtime": config.runtime,
        "runtime_reason": runtime_reason,
        "core_max_batch_size": core_max_batch,
    }


def _write_golden(path: Path, golden: LabelledText, logits: np.ndarray, label_names: list[str]) -> None:
    # What this artifact answers (docs/model-artifact.md): hot-swap verification compares the server with
    # these, so they are the predicted labels, not the golden set's true labels.
    predicted = [label_names[i] for i in logits.argmax(axis=1)]
    path.write_text(json.dumps({"texts": golden.texts, "labels": predicted,
                                "probabilities": softmax(logits).round(7).tolist()}))


def _report(config: CompileConfig, onnx_figures: dict, trt_report: dict, folder: Path, started: float) -> dict:
    import onnx
    import onnxruntime
    import torch

    source_summary = Path(config.model_dir) / "training_summary.json"
    return {
        "source_checkpoint": str(Path(config.model_dir).resolve()),
        "source_training_summary_sha256": sha256_file(source_summary) if source_summary.exists() else None,
        "model_onnx_sha256": sha256_file(folder / "model.onnx"),
        "onnx_parity": onnx_figures,
        "tensorrt": trt_report,
        "versions": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "opset": config.opset,
        "compile_seconds": time.monotonic() - started,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
