"""Inference latency: torch eager vs ONNX Runtime (and TensorRT fp16 on a GPU) at sequence length 128.

Prints one JSON line: ``device``, and for batch 1, 8 and 32 ``torch_ms_bN``, ``ort_ms_bN``,
``ort_speedup_bN`` (torch / ORT); on a GPU also ``torch_bf16_ms_bN`` and, where TensorRT exists,
``trt_ms_bN`` and ``trt_speedup_bN`` (torch eager fp32 / TensorRT fp16), else ``trt_skipped`` with the reason.
Each figure is the median of ``--runs`` timed calls after ``--warmup`` untimed ones.
Run: ``.venv/bin/python benchmarks/compile.py [--model minilm] [--runs 50]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.demo_data import LABELS, generate
from training.inference import encode, load_classifier
from training.onnx_export import OrtRunner, export_onnx
from training.tensorrt_build import EngineRunner, OptimizationProfile, build_engine, unavailable_reason


def median_ms(fn: Callable[[], object], *, runs: int, warmup: int, cuda: bool) -> float:
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="model folder, or 'minilm' (fresh 4-label head)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="batch sizes (default: 1 8 32)")
    parser.add_argument("--sequence", type=int, default=128, help="padded sequence length (default: 128)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per figure (default: 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default: 10)")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model, tokenizer = load_classifier(args.model, labels=list(LABELS) if args.model == "minilm" else None)
    model.eval()
    texts = generate(max(args.batches), domain="B", seed=1).text.tolist()
    result: dict[str, object] = {
        "benchmark": "compile", "model": args.model, "sequence": args.sequence,
        "device": torch.cuda.get_device_name() if cuda
        else f"cpu ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)",
        "runs": args.runs, "warmup": args.warmup, "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        input_names = export_onnx(model, tokenizer, onnx_path)
        model.to(device)
        ort_run = OrtRunner(onnx_path)
        result["ort_providers"] = ort_run.session.get_providers()
        trt_reason = unavailable_reason()
        trt_run = None
        if trt_reason is None:
            profile = OptimizationProfile(min_batch=1, opt_batch=8, max_batch=max(args.batches),
                                          min_sequence=1, opt_sequence=args.sequence, max_sequence=args.sequence)
            metadata = build_engine(onnx_path, Path(tmp) / "model.plan", input_names, profile)
            result["tensorrt_version"] = metadata["tensorrt_version"]
            trt_run = EngineRunner(Path(tmp) / "model.plan")
        else:
            result["trt_skipped"] = trt_reason
        for batch in args.batches:
            cpu_inputs = encode(tokenizer, texts[:batch], max_length=args.sequence, pad_to_max=True)
            inputs = {k: v.to(device) for k, v in cpu_inputs.items()}
            numpy_inputs = {k: v.numpy().astype(np.int64) for k, v in cpu_inputs.items()}

            def eager(inputs: dict = inputs) -> object:
                with torch.inference_mode():
                    return model(**inputs).logits

            time_it = lambda fn: round(median_ms(fn, runs=args.runs, warmup=args.warmup, cuda=cuda), 3)  # noqa: E731
            torch_ms = time_it(eager)
            ort_ms = time_it(lambda feeds=numpy_inputs: ort_run(feeds))
            result.update({f"torch_ms_b{batch}": torch_ms, f"ort_ms_b{batch}": ort_ms,
                           f"ort_speedup_b{batch}": round(torch_ms / ort_ms, 3)})
            if cuda:
                def eager_bf16(inputs: dict = inputs) -> object:
                    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                        return model(**inputs).logits

                result[f"torch_bf16_ms_b{batch}"] = time_it(eager_bf16)
            if trt_run is not None:
                trt_ms = time_it(lambda feeds=inputs: trt_run(feeds))
                result.update({f"trt_ms_b{batch}": trt_ms, f"trt_speedup_b{batch}": round(torch_ms / trt_ms, 3)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
