"""Fine-tuning throughput: pitcrew's loop vs Hugging Face ``Trainer`` on the same data and model, same run.

Prints one JSON line with ``pitcrew_samples_per_s``, ``hf_trainer_samples_per_s`` and ``ratio``.
``Trainer`` keeps its default arguments except what bounds and quiets the run (``max_steps``, no saving,
no reporting, no progress bar); its default per-device batch size is 8, so pitcrew uses 8 too.
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

import torch

from training.data import load_labelled
from training.demo_data import LABELS, write_demo_splits
from training.finetune import FinetuneConfig, finetune
from training.inference import load_classifier

HF_DEFAULT_BATCH = 8  # TrainingArguments.per_device_train_batch_size default


def hf_trainer_samples_per_s(base_model: str, train_path: Path, steps: int, workdir: Path, seed: int) -> float:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    data = load_labelled(train_path)
    model, tokenizer = load_classifier(base_model, labels=list(LABELS))
    ids = data.label_ids(list(LABELS))
    encoded = tokenizer(data.texts, truncation=True, max_length=128)
    rows = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "token_type_ids": encoded["token_type_ids"][i], "labels": ids[i]} for i in range(len(ids))]
    args = TrainingArguments(output_dir=str(workdir / "hf"), max_steps=steps, save_strategy="no",
                             report_to="none", disable_tqdm=True, logging_strategy="no", seed=seed)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer))
    return float(trainer.train().metrics["train_samples_per_second"])


def pitcrew_samples_per_s(base_model: str, train_path: Path, steps: int, workdir: Path, seed: int) -> float:
    out = finetune(FinetuneConfig(output_dir=workdir / "pitcrew", train_data=train_path, base_model=base_model,
                                  labels=list(LABELS), batch_size=HF_DEFAULT_BATCH, max_steps=steps,
                                  eval_fraction=0.0, progress=False, seed=seed))
    return float(json.loads((out / "training_summary.json").read_text())["samples_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default="minilm", help="base model: 'minilm', a folder or a cached hub id")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per contender (default: 40)")
    parser.add_argument("--n-train", type=int, default=640, help="demo-data training rows (default: 640)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per contender (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    contenders = {"pitcrew": pitcrew_samples_per_s, "hf_trainer": hf_trainer_samples_per_s}
    figures: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        train = write_demo_splits(workdir / "data", n_train=args.n_train, n_eval=8, n_golden=8, seed=args.seed)["a_train"]
        for round_ in range(args.rounds):
            order = list(contenders) if round_ % 2 == 0 else list(contenders)[::-1]
            for name in order:
                (workdir / f"{name}{round_}").mkdir()
                figures[name].append(contenders[name](args.base_model, train, args.steps, workdir / f"{name}{round_}",
                                                      args.seed))
    ours, hf = statistics.median(figures["pitcrew"]), statistics.median(figures["hf_trainer"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    print(json.dumps({"benchmark": "finetune", "device": device, "base_model": args.base_model, "steps": args.steps,
                      "batch_size": HF_DEFAULT_BATCH, "pitcrew_samples_per_s": round(ours, 2),
                      "hf_trainer_samples_per_s": round(hf, 2), "ratio": round(ours / hf, 3), "rounds": args.rounds,
                      "all_samples_per_s": {k: [round(x, 2) for x in v] for k, v in figures.items()},
                      "load_average_1m": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
