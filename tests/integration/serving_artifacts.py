"""Build tiny model artifacts (docs/model-artifact.md) for serving tests, without the training CLI.

The training engineer's ``python -m training compile`` produces the same folder; until then tests export a
tiny random BERT to ONNX here and record its golden answers with ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN_TEXTS = [
    "my invoice was charged twice",
    "the app crashes when I log in",
    "please change the email on my account",
    "where is my parcel",
    "refund for the last payment",
    "error 500 on the settings page",
]


def export_onnx(model_dir: Path, onnx_path: Path, max_length: int) -> list[str]:
    """Export a Hugging Face sequence classifier to ONNX with dynamic batch and sequence axes."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    sample = tokenizer(["hello world", "a second text"], padding=True, return_tensors="pt")
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(input_names, inputs, strict=True))).logits

    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            Logits(),
            tuple(sample[n] for n in input_names),
            str(onnx_path),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return input_names


def golden_answers(artifact: Path, texts: list[str]) -> dict:
    """What this exact artifact answers on ``texts``, computed with ONNX Runtime like the server does."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    serving = json.loads((artifact / "serving.json").read_text())
    labels = json.loads((artifact / "labels.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    encoded = tokenizer(
        texts, padding=True, truncation=True, max_length=serving["max_length"], return_tensors="np"
    )
    feeds = {n: encoded[n].astype(np.int64) for n in serving["input_names"]}
    logits = session.run(["logits"], feeds)[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    return {
        "texts": texts,
        "labels": [labels[i] for i in probs.argmax(axis=1)],
        "probabilities": probs.tolist(),
    }


def build_artifact(
    target: Path,
    labels: list[str],
    *,
    seed: int = 0,
    max_length: int = 64,
    hidden_size: int = 32,
    runtime: str = "python-onnxruntime",
) -> Path:
    """Write a complete serving artifact for a tiny random BERT to ``target``; return ``target``."""
    from training.tiny import build_tiny_model

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    hf_dir = target.parent / f".{target.name}-hf"
    build_tiny_model(hf_dir, labels, hidden_size=hidden_size, seed=seed)
    input_names = export_onnx(hf_dir, target / "model.onnx", max_length)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(hf_dir).save_pretrained(target)
    (target / "labels.json").write_text(json.dumps(labels))
    (target / "serving.json").write_text(
        json.dumps({"max_length": max_length, "input_names": input_names, "runtime": runtime})
    )
    (target / "golden.json").write_text(json.dumps(golden_answers(target, GOLDEN_TEXTS)))
    return target
