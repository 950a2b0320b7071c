"""Fine-tuning throughput and accuracy: pitcrew's loop vs Hugging Face ``Trainer``, same data, model and steps.

Prints one JSON line with ``pitcrew_samples_per_s``, ``hf_trainer_samples_per_s``, ``ratio``, both models'
accuracy on the held-out demo eval split (``a_eval``) after the same number of steps, ``accuracy_ok``
(pitcrew's >= Trainer's) and ``meets_targets`` (``ratio`` >= 1.2 and ``accuracy_ok``, issue 17).
``Trainer`` keeps its default arguments (batch 8, learning rate 5e-5, fused AdamW, no length grouping)
except what bounds and quiets the run (``max_steps``, no saving, no reporting, no progress bar), so it trains
in fp32; pitcrew uses batch 8 and its own defaults otherwise (learning rate 5e-5 too), which on a CPU with
bf16 instructions include bf16 autocast (``training/precision.py``; ``pitcrew_precision`` says which ran). Both start from the same weights:
the seed is set before the classifier head is drawn. Both final models are scored by the same function.
The two alternate for ``--rounds`` rounds (order flipped each round, so neither always pays the process's
warm-up) and each reports its median, because a shared CI machine's load swings between single runs.
Run: ``.venv/bin/python benchmarks/finetune.py [--base-model minilm] [--steps 40]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data import LabelledText, load_labelled
from training.demo_data import LABELS, write_demo_splits
from training.finetune import FinetuneConfig, finetune
from training.inference import batched_logits, load_classifier

HF_DEFAULT_BATCH = 8  # TrainingArguments.per_device_train_batch_size default
TARGET_RATIO = 1.2  # issue 17: at least 1.2x Trainer's samples/s, accuracy no worse
PRECISIONS: set[str] = set()  # the autocast precision(s) pitcrew's runs chose, for the JSON line


def accuracy(model: Any, tokenizer: Any, data: LabelledText) -> float:
    """Share of ``data`` classified right; the one scorer for both contenders' final models."""
    logits = batched_logits(model, tokenizer, data.texts, batch_size=64, max_length=128, device=str(model.device))
    return float((logits.argmax(axis=1) == np.asarray(data.label_ids(list(LABELS)))).mean())


def hf_trainer(base_model: str, train_path: Path, steps: int, workdir: Path, seed: int,
               eval_data: LabelledText) -> tuple[float, float]:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    data = load_labelled(train_path)
    set_seed(seed)  # the fresh classifier head is drawn at load: the same head pitcrew's seeded run draws
    model, tokenizer = load_classifier(base_model, labels=list(LABELS))
    ids = data.label_ids(list(LABELS))
    encoded = tokenizer(data.texts, truncation=True, max_length=128)
    rows = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "token_type_ids": encoded["token_type_ids"][i], "labels": ids[i]} for i in range(len(ids))]
    args = TrainingArguments(output_dir=str(workdir / "hf"), max_steps=steps, save_strategy="no",
                             report_to="none", disable_tqdm=True, logging_strategy="no", seed=seed)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer))
    samples_per_s = float(trainer.train().metrics["train_samples_per_second"])
    return samples_per_s, accuracy(trainer.model, tokenizer, eval_data)


def pitcrew(base_model: str, train_path: Path, steps: int, workdir: Path, seed: int,
            eval_data: LabelledText) -> tuple[float, float]:
    # eval_fraction=0: no in-loop eval, all rows train, as for the Trainer; the output is the last step's model
    out = finetune(FinetuneConfig(output_dir=workdir / "pitcrew", train_data=train_path, base_model=base_model,
                                  labels=list(LABELS), batch_size=HF_DEFAULT_BATCH, max_steps=steps,
                                  eval_fraction=0.0, progress=False, seed=seed))
    summary = json.loads((out / "training_summary.json").read_text())
    PRECISIONS.add(summary["precision"])
    return float(summary["samples_per_s"]), accuracy(*load_classifier(out), eval_data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default="minilm", help="base model: 'minilm', a folder or a cached hub id")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per contender (default: 40)")
    parser.add_argument("--n-train", type=int, default=640, help="demo-data training rows (default: 640)")
    parser.add_argument("--n-eval", type=int, default=400, help="demo-data eval rows scored (default: 400)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per contender (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    PRECISIONS.clear()
    contenders = {"pitcrew": pitcrew, "hf_trainer": hf_trainer}
    figures: dict[str, list[float]] = {name: [] for name in contenders}
    accuracies: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        splits = write_demo_splits(workdir / "data", n_train=args.n_train, n_eval=args.n_eval, n_golden=8,
                                   seed=args.seed)
        eval_data = load_labelled(splits["a_eval"])  # held out: drawn with another seed than a_train
        for round_ in range(args.rounds):
            order = list(contenders) if round_ % 2 == 0 else list(contenders)[::-1]
            for name in order:
                (workdir / f"{name}{round_}").mkdir()
                speed, correct = contenders[name](args.base_model, splits["a_train"], args.steps,
                                                  workdir / f"{name}{round_}", args.seed, eval_data)
                figures[name].append(speed)
                accuracies[name].append(correct)
    ours, hf = statistics.median(figures["pitcrew"]), statistics.median(figures["hf_trainer"])
    our_accuracy, hf_accuracy = statistics.median(accuracies["pitcrew"]), statistics.median(accuracies["hf_trainer"])
    accuracy_ok = our_accuracy >= hf_accuracy
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    print(json.dumps({"benchmark": "finetune", "device": device, "base_model": args.base_model, "steps": args.steps,
                      "batch_size": HF_DEFAULT_BATCH, "pitcrew_precision": ",".join(sorted(PRECISIONS)),
                      "pitcrew_samples_per_s": round(ours, 2),
                      "hf_trainer_samples_per_s": round(hf, 2), "ratio": round(ours / hf, 3), "rounds": args.rounds,
                      "all_samples_per_s": {k: [round(x, 2) for x in v] for k, v in figures.items()},
                      "eval_rows": len(eval_data), "pitcrew_eval_accuracy": round(our_accuracy, 4),
                      "hf_trainer_eval_accuracy": round(hf_accuracy, 4),
                      "all_eval_accuracy": {k: [round(x, 4) for x in v] for k, v in accuracies.items()},
                      "accuracy_ok": accuracy_ok, "meets_targets": ours / hf >= TARGET_RATIO and accuracy_ok,
                      "load_average_1m": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
