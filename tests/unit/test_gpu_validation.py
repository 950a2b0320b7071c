"""benchmarks/gpu_validation.py in a reduced mode, forced onto the CPU: one valid JSON line, every skip named."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP_KEYS = {"benchmark", "date", "device", "compute_capability", "versions", "cpu_threads", "load_average_1m",
            "model", "settings",
            "finetune", "compile", "tensorrt_build", "parity", "latency", "speedups", "targets", "skipped",
            "errors", "wall_s"}


@pytest.fixture(scope="module")
def line(tiny_base: Path) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU answer, also on a GPU machine
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_validation", "--model", str(tiny_base), "--steps", "2",
         "--batch-size", "8", "--repeats", "3", "--warmup", "1", "--max-seconds", "5", "--budget-s", "50",
         "--parity-rows", "16", "--batches", "1", "4", "--sequence", "32"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # one JSON line, nothing else on stdout
    return json.loads(lines[0])


def test_the_line_has_every_key_and_no_errors(line: dict) -> None:
    assert set(line) == TOP_KEYS
    assert line["errors"] == {}
    assert line["device"] == "cpu" and line["compute_capability"] is None
    assert set(line["versions"]) == {"torch", "onnxruntime", "tensorrt"}
    assert line["versions"]["onnxruntime"] == onnxruntime.__version__
    assert line["settings"]["batches"] == [1, 4] and line["settings"]["steps"] == 2


def test_missing_pieces_are_skipped_with_their_reasons(line: dict) -> None:
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    ort_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert line["skipped"] == {
        "cuda": "no CUDA device",
        "tensorrt": "no CUDA device" if has_tensorrt else "TensorRT not installed",
        "onnxruntime_cuda": "no CUDA device" if ort_cuda
        else "onnxruntime has no CUDA execution provider (onnxruntime-gpu not installed)",
        "mixed_precision_finetune": "no CUDA device (CPU bf16 autocast: benchmarks/finetune.py)",
    }
    assert (line["versions"]["tensorrt"] is None) is not has_tensorrt
    assert line["compile"]["tensorrt_status"] == "skipped"
    assert line["tensorrt_build"] is None and line["parity"] is None


def test_cpu_figures_are_measured_and_labelled_cpu(line: dict) -> None:
    finetune = line["finetune"]
    assert finetune["device"] == "cpu" and finetune["mixed_precision"] is None
    assert finetune["fp32"]["samples_per_s"] > 0 and finetune["fp32"]["steps"] == 2
    assert line["compile"]["onnx_parity"]["passed"] is True
    assert set(line["latency"]) == {"torch_eager_fp32", "onnxruntime_cpu"}  # no GPU engine pretends to run
    for engine in line["latency"].values():
        assert engine["device"] == "cpu"
        assert set(engine["batches"]) == {"1", "4"}
        for figure in engine["batches"].values():
            assert 0 < figure["median_ms"] <= figure["p95_ms"] and 1 <= figure["runs"] <= 3


def test_gpu_targets_stay_unjudged_without_a_gpu(line: dict) -> None:
    assert line["speedups"] == {"tensorrt_fp16_vs_torch_eager_fp32": {"1": None, "4": None}}
    assert line["targets"] == {
        "tensorrt_fp16_vs_torch_fp32_batch1": {"min": 3.0, "value": None, "met": None},
        "parity_agreement": {"min": 0.999, "value": None, "met": None},
    }


def _figures(device: str, **medians: float) -> dict:
    return {"device": device, "batches": {b: {"median_ms": ms, "p95_ms": ms, "runs": 5} for b, ms in medians.items()}}


def test_speedups_only_compare_figures_from_the_same_gpu() -> None:
    from benchmarks.gpu_validation import speedups, targets

    gpu = "NVIDIA L4"
    latency = {"torch_eager_fp32": _figures(gpu, **{"1": 6.0, "8": 9.0}), "tensorrt_fp16": _figures(gpu, **{"1": 1.5})}
    result = speedups(latency, [1, 8])
    assert result == {"tensorrt_fp16_vs_torch_eager_fp32": {"1": 4.0, "8": None}}
    assert targets(result, {"argmax_agreement": 0.998})["tensorrt_fp16_vs_torch_fp32_batch1"]["met"] is True
    assert targets(result, {"argmax_agreement": 0.998})["parity_agreement"] == {"min": 0.999, "value": 0.998,
                                                                                  "met": False}
    # a CPU torch figure is never divided by a GPU one
    latency["torch_eager_fp32"] = _figures("cpu", **{"1": 6.0})
    assert speedups(latency, [1]) == {"tensorrt_fp16_vs_torch_eager_fp32": {"1": None}}
