"""``python -m training finetune|evaluate|compile|demo-data``: the training CLI for a GPU worker (no Airflow).

Exit codes: 0 success (``evaluate`` also when the verdict is reject, unless ``--fail-on-reject``), 1 reject
with ``--fail-on-reject``, 2 bad input or a failed check (one-line error on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.errors import TrainingError


def _finetune(args: argparse.Namespace) -> int:
    from training.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        output_dir=args.output, train_data=args.train, inference_log=args.inference_log, feedback=args.feedback,
        eval_data=args.eval, base_model=args.base_model, labels=args.labels.split(",") if args.labels else None,
        text_column=args.text_column, label_column=args.label_column, max_length=args.max_length,
        batch_size=args.batch_size, learning_rate=args.learning_rate, epochs=args.epochs, max_steps=args.max_steps,
        eval_every=args.eval_every, early_stopping_patience=args.patience, time_budget_s=args.time_budget_s,
        checkpoint_dir=args.checkpoint_dir, resume=args.resume, seed=args.seed, device=args.device,
        mlflow_tracking_uri=args.mlflow_tracking_uri, mlflow_experiment=args.mlflow_experiment,
        progress=not args.no_progress, overwrite=args.overwrite)
    output = finetune(config)
    summary = json.loads((output / "training_summary.json").read_text())
    print(json.dumps({"output": str(output), "steps": summary["steps"], "stop_reason": summary["stop_reason"],
                      "eval": {k: summary["eval"][k] for k in ("accuracy", "macro_f1")} if summary["eval"] else None}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import EvaluateConfig, evaluate, write_verdict

    verdict = evaluate(EvaluateConfig(
        challenger=args.challenger, champion=args.champion, eval_data=args.eval, golden_data=args.golden,
        min_gain=args.min_gain, alpha=args.alpha, require_significance=args.require_significance,
        max_golden_drop=args.max_golden_drop, min_accuracy=args.min_accuracy, max_length=args.max_length,
        text_column=args.text_column, label_column=args.label_column))
    if args.output:
        write_verdict(verdict, args.output)
    print(json.dumps(verdict.to_dict() if args.verbose else {"decision": verdict.decision, "reasons": verdict.reasons}))
    return 1 if args.fail_on_reject and not verdict.promote else 0


def _compile(args: argparse.Namespace) -> int:
    from training.compile import CompileConfig, compile_model
    from training.tensorrt_build import OptimizationProfile

    profile = OptimizationProfile(*args.trt_batch, *args.trt_sequence)
    output = compile_model(CompileConfig(
        model_dir=args.model, output_dir=args.output, eval_data=args.eval, golden_data=args.golden,
        max_length=args.max_length, opset=args.opset, runtime=args.runtime, tensorrt=args.tensorrt, profile=profile,
        text_column=args.text_column, label_column=args.label_column, overwrite=args.overwrite))
    report = json.loads((output / "compile_report.json").read_text())
    print(json.dumps({"output": str(output), "onnx_parity": report["onnx_parity"],
                      "tensorrt": {k: report["tensorrt"].get(k) for k in ("status", "reason") if k in report["tensorrt"]}}))
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from training.demo_data import write_demo_splits

    paths = write_demo_splits(args.output, n_train=args.n_train, n_eval=args.n_eval, n_golden=args.n_golden,
                              shift=args.shift, seed=args.seed)
    print(json.dumps({name: str(path) for name, path in paths.items()}))
    return 0


def _columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", default="text", help="name of the text column (default: text)")
    parser.add_argument("--label-column", default="label", help="name of the label column (default: label)")
    parser.add_argument("--max-length", type=int, default=128, help="tokenizer truncation length (default: 128)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ft = sub.add_parser("finetune", help="fine-tune a sequence classifier")
    ft.add_argument("--output", type=Path, required=True, help="output folder (written atomically)")
    ft.add_argument("--train", type=Path, help="training data: Parquet, CSV or JSONL with text and label columns")
    ft.add_argument("--inference-log", type=Path, help="inference log (Parquet dataset) to join with --feedback")
    ft.add_argument("--feedback", type=Path, help="feedback labels joined to --inference-log on request_id")
    ft.add_argument("--eval", type=Path, help="eval data; default: a seeded 10%% hold-out of the training rows")
    ft.add_argument("--base-model", default="minilm", help="'minilm' (packaged), a folder, or a locally cached hub id")
    ft.add_argument("--labels", help="comma-separated labels in logit order (default: from the base model or data)")
    _columns(ft)
    ft.add_argument("--batch-size", type=int, default=32, help="training batch size (default: 32)")
    ft.add_argument("--learning-rate", type=float, default=5e-5, help="AdamW peak learning rate (default: 5e-5)")
    ft.add_argument("--epochs", type=float, default=3.0, help="epochs (default: 3)")
    ft.add_argument("--max-steps", type=int, help="optimizer steps; overrides --epochs")
    ft.add_argument("--eval-every", type=int, help="evaluate every N steps (default: once per epoch)")
    ft.add_argument("--patience", type=int, default=2, help="evaluations without improvement before early stop")
    ft.add_argument("--time-budget-s", type=float, help="wall-clock budget; stops cleanly with the best weights")
    ft.add_argument("--checkpoint-dir", type=Path, help="checkpoint folder (default: <output>.ckpt)")
    ft.add_argument("--resume", action="store_true", help="resume from the checkpoint folder if it holds one")
    ft.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    ft.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (default: auto)")
    ft.add_argument("--mlflow-tracking-uri", help="log per-step metrics here (default: $MLFLOW_TRACKING_URI)")
    ft.add_argument("--mlflow-experiment", default="pitcrew-finetune", help="MLflow experiment name")
    ft.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ft.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    ft.set_defaults(func=_finetune)

    ev = sub.add_parser("evaluate", help="challenger vs champion on the same rows; prints a promote/reject verdict")
    ev.add_argument("--challenger", type=Path, required=True, help="fine-tuned challenger folder")
    ev.add_argument("--champion", type=Path, help="current champion folder (omit for the first model)")
    ev.add_argument("--eval", type=Path, required=True, help="eval data with text and label columns")
    ev.add_argument("--golden", type=Path, help="fixed golden set with text and label columns")
    ev.add_argument("--min-gain", type=float, default=0.0, help="minimum accuracy gain over the champion")
    ev.add_argument("--alpha", type=float, default=0.05, help="McNemar significance level (default: 0.05)")
    ev.add_argument("--require-significance", action="store_true", help="a positive gain must also be significant")
    ev.add_argument("--max-golden-drop", type=float, default=0.0, help="allowed golden-set accuracy drop")
    ev.add_argument("--min-accuracy", type=float, default=0.0, help="absolute eval-accuracy floor")
    _columns(ev)
    ev.add_argument("--output", type=Path, help="write the full verdict JSON here")
    ev.add_argument("--verbose", action="store_true", help="print the full verdict, not only decision and reasons")
    ev.add_argument("--fail-on-reject", action="store_true", help="exit 1 when the verdict is reject")
    ev.set_defaults(func=_evaluate)

    co = sub.add_parser("compile", help="export to ONNX (and TensorRT on a GPU) with parity checks")
    co.add_argument("--model", type=Path, required=True, help="fine-tuned model folder")
    co.add_argument("--output", type=Path, required=True, help="artifact folder (docs/model-artifact.md)")
    co.add_argument("--eval", type=Path, help="rows to check parity on")
    co.add_argument("--golden", type=Path, help="golden set; its answers go into golden.json")
    _columns(co)
    co.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    co.add_argument("--runtime", choices=("python-onnxruntime", "onnxruntime", "tensorrt"),
                    default="python-onnxruntime", help="serving runtime written into serving.json")
    co.add_argument("--tensorrt", choices=("auto", "off", "require"), default="auto",
                    help="auto: build an engine when CUDA and TensorRT exist; require: fail otherwise")
    co.add_argument("--trt-batch", type=int, nargs=3, default=(1, 8, 32), metavar=("MIN", "OPT", "MAX"),
                    help="TensorRT profile batch sizes (default: 1 8 32)")
    co.add_argument("--trt-sequence", type=int, nargs=3, default=(1, 64, 128), metavar=("MIN", "OPT", "MAX"),
                    help="TensorRT profile sequence lengths (default: 1 64 128)")
    co.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    co.set_defaults(func=_compile)

    dd = sub.add_parser("demo-data", help="write seeded two-domain demo data (a_train, a_eval, b_train, b_eval, golden)")
    dd.add_argument("--output", type=Path, required=True, help="folder for the Parquet files")
    dd.add_argument("--n-train", type=int, default=800, help="rows per training split (default: 800)")
    dd.add_argument("--n-eval", type=int, default=400, help="rows per eval split (default: 400)")
    dd.add_argument("--n-golden", type=int, default=64, help="golden rows, half per domain (default: 64)")
    dd.add_argument("--shift", type=float, default=1.0, help="how far domain B is from A, in [0, 1] (default: 1)")
    dd.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    dd.set_defaults(func=_demo_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (TrainingError, ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
