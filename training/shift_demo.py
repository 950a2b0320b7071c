"""The domain-shift recovery demonstration: ``python -m training.shift_demo [--base-model minilm]``.

Fine-tunes on domain A, evaluates on A and B, fine-tunes that model further on B, evaluates on B again,
and prints one JSON line: accuracy A→A, A→B (drop), B after fine-tuning on B (recovery), plus the mean
confidence and unknown-token rate per domain, which is what serving-side monitoring sees.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from training.demo_data import write_demo_splits
from training.evaluate import EvaluateConfig, evaluate
from training.finetune import FinetuneConfig, finetune
from training.inference import load_classifier


def unknown_token_rate(model_dir: Path, texts: list[str]) -> float:
    _, tokenizer = load_classifier(model_dir)
    ids = [i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    return sum(i == tokenizer.unk_token_id for i in ids) / max(1, len(ids))


def run(base_model: str, workdir: Path, *, n_train: int, epochs: float, shift: float, seed: int) -> dict:
    started = time.monotonic()
    data = write_demo_splits(workdir / "data", n_train=n_train, n_eval=400, shift=shift, seed=seed)
    common = dict(epochs=epochs, seed=seed, progress=False)
    model_a = finetune(FinetuneConfig(output_dir=workdir / "model_a", train_data=data["a_train"],
                                      eval_data=data["a_eval"], base_model=base_model, **common))
    model_b = finetune(FinetuneConfig(output_dir=workdir / "model_b", train_data=data["b_train"],
                                      eval_data=data["b_eval"], base_model=str(model_a), **common))
    a_on_a = evaluate(EvaluateConfig(challenger=model_a, eval_data=data["a_eval"])).challenger["eval"]
    a_on_b = evaluate(EvaluateConfig(challenger=model_a, eval_data=data["b_eval"])).challenger["eval"]
    gate = evaluate(EvaluateConfig(challenger=model_b, champion=model_a, eval_data=data["b_eval"],
                                   golden_data=data["golden"], max_golden_drop=0.05))
    import pandas as pd

    texts = {d: pd.read_parquet(data[f"{d}_eval"])["text"].tolist() for d in ("a", "b")}
    return {
        "benchmark": "domain_shift_recovery", "base_model": base_model, "n_train": n_train, "epochs": epochs,
        "shift": shift, "seed": seed,
        "acc_a_on_a": a_on_a["accuracy"], "acc_a_on_b": a_on_b["accuracy"],
        "acc_b_after_finetune_on_b": gate.challenger["eval"]["accuracy"],
        "golden_acc_model_a": gate.champion["golden"]["accuracy"],
        "golden_acc_model_b": gate.challenger["golden"]["accuracy"],
        "confidence_a_on_a": a_on_a["mean_confidence"], "confidence_a_on_b": a_on_b["mean_confidence"],
        "unk_rate_a": unknown_token_rate(model_a, texts["a"]), "unk_rate_b": unknown_token_rate(model_a, texts["b"]),
        "gate_decision": gate.decision, "mcnemar_p": gate.comparison["mcnemar"]["p_value"],
        "wall_s": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default="minilm", help="base model: 'minilm', a folder or a cached hub id")
    parser.add_argument("--n-train", type=int, default=800, help="training rows per domain (default: 800)")
    parser.add_argument("--epochs", type=float, default=2.0, help="epochs per fine-tune (default: 2)")
    parser.add_argument("--shift", type=float, default=1.0, help="domain B shift in [0, 1] (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--workdir", type=Path, help="keep data and models here (default: a temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        print(json.dumps(run(args.base_model, workdir, n_train=args.n_train, epochs=args.epochs, shift=args.shift,
                             seed=args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
