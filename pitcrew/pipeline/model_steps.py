"""Model steps: fine-tune the champion on new traffic, judge it, compile it, replay real traffic through it."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from pitcrew.models_file import ModelEntry
from pitcrew.pipeline.workspace import Workspace

log = logging.getLogger(__name__)


def fine_tune(
    entry: ModelEntry,
    ws: Workspace,
    *,
    base_model: str,
    mlflow_tracking_uri: str | None = None,
) -> dict:
    """Fine-tune ``base_model`` (normally the champion's checkpoint) on the workspace's training split.

    Resumes from the checkpoint folder an interrupted attempt left behind, so a retried task does not
    start over.
    """
    from pitcrew.pipeline.training_config import finetune_config
    from training.finetune import finetune

    checkpoint = ws.path("finetune.ckpt")
    config = finetune_config(
        entry,
        output_dir=ws.challenger,
        train_data=ws.train,
        eval_data=ws.eval,
        base_model=base_model,
        checkpoint_dir=checkpoint,
        resume=checkpoint.exists(),
        mlflow_tracking_uri=mlflow_tracking_uri,
    )
    started = time.monotonic()
    output = finetune(config)
    summary = json.loads((output / "training_summary.json").read_text())
    return {
        "checkpoint": str(output),
        "device": summary.get("device", "cpu"),
        "seconds": round(time.monotonic() - started, 3),
        "summary": {
            k: summary.get(k)
            for k in ("steps", "resumed_from_step", "epochs_completed", "stop_reason", "eval", "samples_per_s")
        },
    }


def evaluate(entry: ModelEntry, ws: Workspace, *, challenger: Path, champion: Path | None) -> dict:
    """Champion vs challenger on the drifted hold-out and the fixed golden set; a JSON verdict."""
    from training.evaluate import EvaluateConfig, write_verdict
    from training.evaluate import evaluate as run_evaluate

    config = EvaluateConfig(
        challenger=challenger,
        champion=champion,
        eval_data=ws.eval,
        golden_data=Path(entry.golden_data) if entry.golden_data else None,
        min_gain=entry.thresholds.min_accuracy_gain,
        max_golden_drop=entry.thresholds.max_golden_drop,
    )
    verdict = run_evaluate(config)
    write_verdict(verdict, ws.reports / "evaluation.json")
    return verdict.to_dict()


def compile_artifact(entry: ModelEntry, ws: Workspace, *, checkpoint: Path) -> dict:
    """Export to ONNX (and TensorRT where present) with numeric parity on the drifted slice.

    An ONNX parity failure raises, and so does a TensorRT one under ``tensorrt: require``: nothing
    deployable is written and the run stops here. Under ``auto`` a runtime ``tensorrt`` model without a
    passing engine is served by the ONNX core; ``report["runtime"]`` and ``report["runtime_reason"]`` say so.
    """
    from training.compile import CompileConfig, compile_model

    golden = Path(entry.golden_data) if entry.golden_data else ws.eval
    config = CompileConfig(
        model_dir=checkpoint, output_dir=ws.artifact, eval_data=ws.eval, golden_data=golden,
        runtime=entry.runtime, tensorrt=entry.tensorrt_mode, overwrite=True,
    )  # fmt: skip
    folder = compile_model(config)
    report = json.loads((folder / "compile_report.json").read_text())
    return {"artifact": str(folder), "report": report}


def _answers(artifact: Path, texts: list[str], batch_size: int = 64) -> tuple[list[str], np.ndarray]:
    """(labels, probabilities) of a compiled artifact's ONNX model on ``texts``.

    Logged traffic repeats itself (retries, templated messages), so each distinct text runs once; and
    batches are cut from the texts sorted by token count, so a batch pads to its own length rather than
    to the longest text in a random 64 (the attention mask makes padding exact, it only costs time).
    """
    from transformers import AutoTokenizer

    from training.onnx_export import OrtRunner

    labels = json.loads((artifact / "labels.json").read_text())
    serving = json.loads((artifact / "serving.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    runner = OrtRunner(artifact / "model.onnx")
    unique, position = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    encoded = tokenizer(unique.tolist(), truncation=True, max_length=serving.get("max_length", 128))
    order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
    probs = np.zeros((len(unique), len(labels)), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({k: [v[i] for i in rows] for k, v in encoded.items()}, return_tensors="np")
        logits = runner(dict(batch))
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs[rows] = exp / exp.sum(axis=1, keepdims=True)
    probs = probs[position.reshape(-1)]
    return [labels[i] for i in probs.argmax(axis=1)], probs


def replay(ws: Workspace, *, artifact: Path, max_rows: int = 5000) -> dict:
    """Run the challenger and the current champion over the window's logged inputs and compare them.

    This is what would change for real users: agreement, label flips per class, confidence shift, and
    accuracy of both on the requests that got feedback. Both models answer the same inputs now; the
    answers logged at request time came from whichever version served then (often an older one), so
    they are used only when the champion's artifact is not in the workspace (``compared_with`` says which).
    """
    window = pd.read_parquet(ws.window).tail(max_rows).reset_index(drop=True)
    if window.empty:
        return {"rows": 0, "note": "no logged traffic in the window to replay"}
    texts = window["text"].astype(str).tolist()
    challenger_labels, probs = _answers(artifact, texts)
    if (ws.champion_serving / "model.onnx").exists():
        champion_labels, champion_probs = _answers(ws.champion_serving, texts)
        compared_with, champion_confidence = "the current champion, on the same inputs", champion_probs.max(axis=1)
    else:
        champion_labels = window["label"].astype(str).tolist()
        compared_with = "the answers logged at request time (no champion artifact in the workspace)"
        champion_confidence = window["confidence"].to_numpy(dtype=float)
    pairs = list(zip(champion_labels, challenger_labels, strict=True))
    flips = Counter(f"{a}->{b}" for a, b in pairs if a != b)
    result: dict = {
        "rows": len(window),
        "compared_with": compared_with,
        "agreement": float(np.mean([a == b for a, b in pairs])),
        "label_flips": dict(flips.most_common()),
        "champion_mean_confidence": float(np.mean(champion_confidence)),
        "challenger_mean_confidence": float(probs.max(axis=1).mean()),
    }
    result["confidence_shift"] = result["challenger_mean_confidence"] - result["champion_mean_confidence"]
    truth = window["feedback_label"]
    has_truth = truth.notna().to_numpy()
    if has_truth.any():
        truth_values = truth[has_truth].astype(str).to_numpy()
        result["labelled_rows"] = int(has_truth.sum())
        result["champion_accuracy"] = float(np.mean(np.asarray(champion_labels)[has_truth] == truth_values))
        result["challenger_accuracy"] = float(
            np.mean(np.asarray(challenger_labels)[has_truth] == truth_values)
        )
    (ws.reports / "replay.json").write_text(json.dumps(result, indent=2))
    return result
