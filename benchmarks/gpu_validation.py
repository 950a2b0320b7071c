"""GPU validation in one command: fine-tune throughput, TensorRT build and parity, latency; one JSON line.

Run from the repository root: ``.venv/bin/python -m benchmarks.gpu_validation`` (docs/gpu-validation.md
has the compose GPU worker equivalent and what every key means). It chains the real code paths on the
shipped MiniLM (``--model``): ``training.finetune`` in fp32 and in the mixed precision ``pick_precision``
chooses, ``training.compile`` (ONNX export with CPU parity, TensorRT fp16 build with parity against torch
fp32), then latency at each ``--batches`` of torch eager fp32, ONNX Runtime (CUDA with TF32 off, else CPU)
and TensorRT fp16. Every call returns host logits, so each figure covers the same work.

A missing piece (no CUDA, no TensorRT, no onnxruntime CUDA provider) is listed in ``skipped`` with its
reason, never faked; a CPU figure is labelled with ``cpu``, never with the GPU. Every loop is bounded by a
count and by time (``--max-seconds`` per measurement, ``--budget-s`` for the run), so it finishes unattended.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from training.compile import CompileConfig, compile_model, strict_fp32
from training.demo_data import LABELS, write_demo_splits
from training.finetune import FinetuneConfig, finetune
from training.inference import encode, load_classifier
from training.onnx_export import OrtRunner
from training.precision import pick_precision
from training.tensorrt_build import EngineRunner, OptimizationProfile, unavailable_reason

#: Issue targets: TensorRT fp16 at batch 1 this many times faster than torch eager fp32, and fp16 parity.
TARGETS = {"tensorrt_fp16_vs_torch_fp32_batch1": 3.0, "parity_agreement": 0.999}
CUDA_EP = "CUDAExecutionProvider"


class Deadline:
    """The run's time budget: a measurement gets ``cap_s`` seconds at most, and nothing past the end."""

    def __init__(self, budget_s: float, cap_s: float) -> None:
        self.end = time.monotonic() + budget_s
        self.cap_s = cap_s

    def left(self) -> float:
        return self.end - time.monotonic()

    def cap(self) -> float:
        return max(0.0, min(self.cap_s, self.left()))


def environment() -> tuple[dict, dict]:
    """Device, compute capability and versions, plus the pieces this machine lacks (name -> reason)."""
    import onnxruntime
    import torch

    skipped: dict[str, str] = {}
    cuda = torch.cuda.is_available()
    if not cuda:
        skipped["cuda"] = "no CUDA device"
    try:
        import tensorrt

        trt_version = tensorrt.__version__
    except ImportError:
        trt_version = None
    trt_reason = unavailable_reason()
    if trt_reason is not None:
        skipped["tensorrt"] = trt_reason
    if CUDA_EP not in onnxruntime.get_available_providers():
        skipped["onnxruntime_cuda"] = "onnxruntime has no CUDA execution provider (onnxruntime-gpu not installed)"
    elif not cuda:
        skipped["onnxruntime_cuda"] = "no CUDA device"
    env = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability()) if cuda else None,
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "tensorrt": trt_version},
        "cpu_threads": torch.get_num_threads(),
        # CPU figures swing with other work on a shared machine; this says how busy it was
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    return env, skipped


@contextlib.contextmanager
def _without_env(name: str) -> Iterator[None]:
    """A GPU worker has MLFLOW_TRACKING_URI set; benchmark runs must not land in the model registry's MLflow."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def finetune_section(args: argparse.Namespace, train: Path, workdir: Path, device: str,
                     deadline: Deadline, skipped: dict) -> tuple[dict, Path]:
    """samples/s of pitcrew's fine-tune loop in fp32 and in ``pick_precision``'s mixed precision.

    :return: the figures, and the fp32 run's model (compiled and timed by the next sections).
    """
    # GPU mixed precision only: CPU bf16 autocast is measured against the Trainer by benchmarks/finetune.py
    mixed = pick_precision(device) if device == "cuda" else "fp32"
    precisions = ["fp32"] if mixed == "fp32" else ["fp32", mixed]
    if mixed == "fp32":
        skipped["mixed_precision_finetune"] = "no CUDA device (CPU bf16 autocast: benchmarks/finetune.py)"

    def run(precision: str, name: str, steps: int) -> dict:
        config = FinetuneConfig(output_dir=workdir / name, train_data=train, base_model=args.model,
                                labels=list(LABELS), batch_size=args.batch_size, max_steps=steps,
                                eval_fraction=0.0, progress=False, seed=args.seed, device=device,
                                precision=precision, time_budget_s=deadline.cap())
        with _without_env("MLFLOW_TRACKING_URI"):
            return json.loads((finetune(config) / "training_summary.json").read_text())

    figures: dict[str, Any] = {"device": device, "batch_size": args.batch_size, "max_steps": args.steps,
                               "mixed_precision": None if mixed == "fp32" else mixed}
    for precision in precisions:
        if device == "cuda":  # the first CUDA steps pay cuBLAS/cuDNN set-up; keep it out of the figure
            run(precision, f"warmup-{precision}", min(3, args.steps))
        summary = run(precision, f"finetune-{precision}", args.steps)
        figures[precision] = {"samples_per_s": _round(summary["samples_per_s"]), "steps": summary["steps"],
                              "stop_reason": summary["stop_reason"]}
    if mixed != "fp32":
        figures["mixed_vs_fp32"] = _ratio(figures[mixed]["samples_per_s"], figures["fp32"]["samples_per_s"])
    return figures, workdir / "finetune-fp32"


def compile_section(args: argparse.Namespace, model_dir: Path, data: dict[str, Path],
                    workdir: Path) -> tuple[dict, Path]:
    """``training.compile`` with an fp16 engine where possible (``auto``: a parity failure is reported)."""
    max_batch = max(args.batches)
    profile = OptimizationProfile(min_batch=1, opt_batch=min(8, max_batch), max_batch=max_batch, min_sequence=1,
                                  opt_sequence=args.sequence, max_sequence=args.sequence)
    started = time.monotonic()
    artifact = compile_model(CompileConfig(
        model_dir=model_dir, output_dir=workdir / "artifact", eval_data=data["a_eval"], golden_data=data["golden"],
        max_length=args.sequence, tensorrt="auto", profile=profile, parity_rows=args.parity_rows,
        parity_batch_size=min(32, max_batch)))
    report = json.loads((artifact / "compile_report.json").read_text())
    trt = report["tensorrt"]
    section = {"seconds": round(time.monotonic() - started, 2), "onnx_parity": _parity_figures(report["onnx_parity"]),
               "tensorrt_status": trt["status"], "tensorrt_reason": trt.get("reason", "")}
    return section, artifact


def _parity_figures(figures: dict) -> dict:
    keep = ("rows", "argmax_agreement", "max_abs_diff", "max_abs_diff_allowed", "passed")
    return {k: figures[k] for k in keep if k in figures}


def time_calls(fn: Callable[[], object], *, runs: int, warmup: int, max_seconds: float, cuda: bool) -> dict:
    """Median and p95 milliseconds of up to ``runs`` calls after ``warmup``; stops at ``max_seconds``."""
    import torch

    started = time.monotonic()
    for _ in range(warmup):  # at most half the time, so the timed calls keep the other half
        fn()
        if time.monotonic() - started > max_seconds / 2:
            break
    times: list[float] = []
    while len(times) < runs and (not times or time.monotonic() - started < max_seconds):
        tick = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - tick) * 1000)
    return {"median_ms": round(statistics.median(times), 3), "p95_ms": round(float(np.percentile(times, 95)), 3),
            "runs": len(times)}


def _engines(model: Any, artifact: Path | None, env: dict, skipped: dict) -> dict:
    """name -> (device label, factory of a timed call from (torch inputs on the device, numpy inputs))."""
    import torch

    def eager(inputs: dict, _: dict) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return model(**inputs).logits.float().cpu().numpy()
        return call

    engines: dict[str, tuple[str, Callable]] = {"torch_eager_fp32": (env["device"], eager)}
    if artifact is None:
        return engines
    ort_cuda = None
    if "onnxruntime_cuda" not in skipped:
        ort_cuda = OrtRunner(artifact / "model.onnx", providers=[CUDA_EP])
        if ort_cuda.providers[0] != CUDA_EP:  # ONNX Runtime falls back to CPU silently (missing CUDA libraries)
            skipped["onnxruntime_cuda"] = f"onnxruntime could not start its CUDA provider (got {ort_cuda.providers})"
            ort_cuda = None
    if ort_cuda is not None:
        engines["onnxruntime_cuda"] = (env["device"], lambda _, feeds: lambda: ort_cuda(feeds))
    else:  # still a real figure, labelled as what it is
        ort_cpu = OrtRunner(artifact / "model.onnx", providers=["CPUExecutionProvider"])
        engines["onnxruntime_cpu"] = ("cpu", lambda _, feeds: lambda: ort_cpu(feeds))
    if (artifact / "model.plan").exists():
        trt_run = EngineRunner(artifact / "model.plan")
        engines["tensorrt_fp16"] = (env["device"], lambda inputs, _: lambda: trt_run(inputs))
    elif "tensorrt" not in skipped:
        skipped["tensorrt_fp16_latency"] = "no engine shipped: it failed parity (see parity)"
    return engines


def latency_section(args: argparse.Namespace, model_dir: Path, artifact: Path | None, texts: list[str],
                    env: dict, skipped: dict, deadline: Deadline) -> dict:
    """Latency per engine and batch at ``--sequence`` tokens (padded), each figure bounded in runs and time."""
    cuda = env["device"] != "cpu"
    model, tokenizer = load_classifier(model_dir, device="cuda" if cuda else "cpu")
    model.eval()
    engines = _engines(model, artifact, env, skipped)
    latency: dict[str, dict] = {name: {"device": label, "batches": {}} for name, (label, _) in engines.items()}
    with strict_fp32():  # torch eager fp32 means fp32: no TF32 matmuls on Ampere+
        for batch in args.batches:
            cpu_inputs = encode(tokenizer, (texts * batch)[:batch], max_length=args.sequence, pad_to_max=True)
            inputs = {k: v.to("cuda" if cuda else "cpu") for k, v in cpu_inputs.items()}
            feeds = {k: v.numpy().astype(np.int64) for k, v in cpu_inputs.items()}
            for name, (_, factory) in engines.items():
                if deadline.left() <= 0:
                    skipped.setdefault("latency", f"time budget (--budget-s {args.budget_s:g}) spent")
                    return latency
                latency[name]["batches"][str(batch)] = time_calls(
                    factory(inputs, feeds), runs=args.repeats, warmup=args.warmup, max_seconds=deadline.cap(),
                    cuda=cuda)
    return latency


def speedups(latency: dict, batches: list[int]) -> dict:
    """TensorRT fp16 over torch eager fp32 per batch; ``None`` unless both were measured on the same GPU."""
    trt, eager = latency.get("tensorrt_fp16"), latency.get("torch_eager_fp32")
    same_gpu = trt is not None and eager is not None and trt["device"] == eager["device"] != "cpu"
    out = {}
    for batch in batches:
        pair = (trt["batches"].get(str(batch)), eager["batches"].get(str(batch))) if same_gpu else (None, None)
        out[str(batch)] = _ratio(pair[1]["median_ms"], pair[0]["median_ms"]) if all(pair) else None
    return {"tensorrt_fp16_vs_torch_eager_fp32": out}


def targets(speedup: dict, parity: dict | None) -> dict:
    def target(value: float | None, minimum: float) -> dict:
        return {"min": minimum, "value": value, "met": None if value is None else value >= minimum}

    b1 = speedup["tensorrt_fp16_vs_torch_eager_fp32"].get("1")
    agreement = parity.get("argmax_agreement") if parity else None
    return {"tensorrt_fp16_vs_torch_fp32_batch1": target(b1, TARGETS["tensorrt_fp16_vs_torch_fp32_batch1"]),
            "parity_agreement": target(agreement, TARGETS["parity_agreement"])}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def run(args: argparse.Namespace) -> dict:
    """Every section in order; a section that fails is recorded in ``errors`` and the rest still runs."""
    started = time.monotonic()
    deadline = Deadline(args.budget_s, args.max_seconds)
    env, skipped = environment()
    result: dict[str, Any] = {
        "benchmark": "gpu_validation", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **env,
        "model": args.model,
        "settings": {k: getattr(args, k) for k in ("steps", "batch_size", "repeats", "warmup", "max_seconds",
                                                    "budget_s", "batches", "sequence", "parity_rows")},
        "finetune": None, "compile": None, "tensorrt_build": None, "parity": None, "latency": {},
    }
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = write_demo_splits(workdir / "data", n_train=max(64, args.steps * args.batch_size),
                                 n_eval=args.parity_rows, n_golden=16, seed=args.seed)
        model_dir = artifact = None
        try:
            result["finetune"], model_dir = finetune_section(args, data["a_train"], workdir,
                                                             "cpu" if "cuda" in skipped else "cuda", deadline, skipped)
        except Exception as error:  # one failed section must not lose the other figures
            errors["finetune"] = f"{type(error).__name__}: {error}"
        if model_dir is not None:
            try:
                result["compile"], artifact = compile_section(args, model_dir, data, workdir)
                _engine_figures(result, artifact)
            except Exception as error:
                errors["compile"] = f"{type(error).__name__}: {error}"
            try:
                texts = read_texts(data["b_eval"])
                result["latency"] = latency_section(args, model_dir, artifact, texts, env, skipped, deadline)
            except Exception as error:
                errors["latency"] = f"{type(error).__name__}: {error}"
    result["speedups"] = speedups(result["latency"], args.batches)
    result["targets"] = targets(result["speedups"], result["parity"])
    result["skipped"] = skipped
    result["errors"] = errors
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def _engine_figures(result: dict, artifact: Path) -> None:
    """Build seconds and parity of the fp16 engine, from the compile report (built or failed parity)."""
    trt = json.loads((artifact / "compile_report.json").read_text())["tensorrt"]
    if trt["status"] in ("built", "failed_parity"):
        result["tensorrt_build"] = {"precision": "fp16", "seconds": trt.get("build_seconds")}
        result["parity"] = {"reference": "torch fp32 (CPU, TF32 off)", **_parity_figures(trt["parity"])}


def read_texts(path: Path) -> list[str]:
    import pandas as pd

    return pd.read_parquet(path)["text"].astype(str).tolist()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_validation", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="base model: 'minilm' (shipped) or a model folder")
    parser.add_argument("--steps", type=int, default=40, help="fine-tune optimizer steps per precision (default: 40)")
    parser.add_argument("--batch-size", type=int, default=32, help="fine-tune batch size (default: 32)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per latency figure (default: 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before each figure (default: 10)")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="time cap of each measurement: a fine-tune run or a latency figure (default: 20)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="time budget of the whole run; later measurements are skipped past it (default: 420)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="latency batch sizes")
    parser.add_argument("--sequence", type=int, default=128, help="padded sequence length (default: 128)")
    parser.add_argument("--parity-rows", type=int, default=1024, help="rows of the TensorRT parity check")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(run(build_parser().parse_args(argv))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
