"""Compile a fine-tuned model into the serving artifact of docs/model-artifact.md.

ONNX export (dynamic batch and sequence) with parity against torch on the eval rows: 100% argmax agreement
and max |Δlogit| <= 1e-4 in fp32. On a CUDA machine with TensorRT, also an fp16 engine with parity
(>= 99.9% agreement, max |Δlogit| <= 1e-2) and its version/GPU metadata; otherwise the report says why it
was skipped, and no engine is faked. Everything is written under a temporary name and renamed into place;
a parity failure raises ``ParityError`` and leaves nothing deployable behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from training.data import LabelledText, load_labelled
from training.errors import DataError, ParityError
from training.inference import encode, load_classifier, model_labels, softmax
from training.onnx_export import OrtRunner, export_onnx
from training.tensorrt_build import (
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
        default="python-onnxruntime", metadata={"help": "serving runtime written into serving.json"}
    )
    tensorrt: TensorRTMode = field(
        default="auto",
        metadata={
            "help": "auto: build an engine when CUDA and TensorRT exist; off; "
            "require: fail if it cannot be built"
        },
    )
    profile: OptimizationProfile = field(
        default_factory=OptimizationProfile, metadata={"help": "TensorRT optimisation profile"}
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
        if self.tensorrt not in get_args(TensorRTMode):
            raise ValueError(f"tensorrt must be auto, off or require, got {self.tensorrt!r}")
        if self.runtime not in get_args(Runtime):
            raise ValueError(f"unknown runtime {self.runtime!r}")
        if self.runtime == "tensorrt" and self.tensorrt == "off":
            raise ValueError("runtime 'tensorrt' needs the TensorRT build (tensorrt != off)")


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Argmax agreement and max |Δlogit| between two ``[n, labels]`` logit arrays."""
    if reference.shape != candidate.shape:
        raise ParityError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    if not np.all(np.isfinite(candidate)):
        return {"rows": int(len(reference)), "argmax_agreement": 0.0, "max_abs_diff": float("inf")}
    agreement = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if len(reference) else 1.0
    diff = float(np.max(np.abs(reference - candidate))) if len(reference) else 0.0
    return {"rows": int(len(reference)), "argmax_agreement": agreement, "max_abs_diff": diff}


def _check(name: str, figures: dict, min_agreement: float, max_abs_diff: float) -> None:
    figures.update(min_agreement=min_agreement, max_abs_diff_allowed=max_abs_diff,
                   passed=figures["argmax_agreement"] >= min_agreement and figures["max_abs_diff"] <= max_abs_diff)
    if not figures["passed"]:
        raise ParityError(
            f"{name} parity failed on {figures['rows']} rows: argmax agreement {figures['argmax_agreement']:.4%} "
            f"(need >= {min_agreement:.2%}), max |Δlogit| {figures['max_abs_diff']:.3g} (allowed {max_abs_diff:g}); "
            "nothing was written")


def _batched(run: Any, tokenizer: Any, texts: list[str], config: CompileConfig) -> np.ndarray:
    out = [run(encode(tokenizer, texts[i:i + config.parity_batch_size], max_length=config.max_length))
           for i in range(0, len(texts), config.parity_batch_size)]
    return np.concatenate(out)


def compile_model(config: CompileConfig) -> Path:
    """Export, check parity, optionally build TensorRT, and publish the artifact folder; return its path."""
    import torch

    started = time.monotonic()
    output_dir = Path(config.output_dir)
    if output_dir.exists() and not config.overwrite:
        raise FileExistsError(f"output folder {output_dir} already exists (pass overwrite)")
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
        with torch.inference_mode():
            return model(**batch).logits.float().numpy()

    tmp = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        input_names = export_onnx(model, tokenizer, tmp / "model.onnx", opset=config.opset)
        ort_run = OrtRunner(tmp / "model.onnx")
        reference = _batched(torch_run, tokenizer, parity_texts, config)
        onnx_figures = parity(reference, _batched(ort_run, tokenizer, parity_texts, config))
        _check("ONNX", onnx_figures, config.onnx_min_agreement, config.onnx_max_abs_diff)
        trt_report = _tensorrt(tmp, input_names, tokenizer, parity_texts, reference, config)
        tokenizer.save_pretrained(tmp)
        (tmp / "labels.json").write_text(json.dumps(labels))
        (tmp / "serving.json").write_text(json.dumps({
            "max_length": config.max_length, "input_names": input_names, "output_name": "logits",
            "runtime": config.runtime, "tensorrt_plan": trt_report.get("status") == "built"}, indent=2))
        golden.require_known_labels(labels)
        _write_golden(tmp / "golden.json", golden, _batched(ort_run, tokenizer, golden.texts, config), labels)
        report = _report(config, onnx_figures, trt_report, tmp, started)
        report["golden_source"] = golden.source
        (tmp / "compile_report.json").write_text(json.dumps(report, indent=2, default=str))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def _tensorrt(folder: Path, input_names: list[str], tokenizer: Any, texts: list[str], reference: np.ndarray,
              config: CompileConfig) -> dict:
    """Build and check the engine when possible; a reason to skip is reported, never papered over."""
    if config.tensorrt == "off":
        return {"status": "skipped", "reason": "disabled (tensorrt=off)"}
    reason = unavailable_reason()
    if reason is not None:
        if config.tensorrt == "require" or config.runtime == "tensorrt":
            raise TensorRTBuildError(f"TensorRT engine required but cannot be built: {reason}")
        return {"status": "skipped", "reason": reason}
    if config.max_length > config.profile.max_sequence or config.parity_batch_size > config.profile.max_batch:
        raise ValueError(f"TensorRT profile {config.profile} does not cover max_length {config.max_length} "
                         f"and parity batch {config.parity_batch_size}")
    metadata = build_engine(folder / "model.onnx", folder / "model.plan", input_names, config.profile)
    figures = parity(reference, _batched(EngineRunner(folder / "model.plan"), tokenizer, texts, config))
    _check("TensorRT", figures, config.trt_min_agreement, config.trt_max_abs_diff)
    metadata["parity"] = figures
    (folder / "tensorrt.json").write_text(json.dumps(metadata, indent=2))
    return {"status": "built", **metadata}


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
