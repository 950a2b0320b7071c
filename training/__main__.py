"""``python -m training finetune|evaluate|compile|demo-data``: the training CLI for a GPU worker (no Airflow).

The flags of ``finetune``, ``evaluate`` and ``compile`` are built by ``transformers.HfArgumentParser`` from
``FinetuneConfig``, ``EvaluateConfig`` and ``CompileConfig``: one flag per field (``--output-dir``, or
``--output_dir``), with the field's type, default and ``metadata["help"]``.

Exit codes: 0 success (``evaluate`` also when the verdict is reject, unless ``--fail-on-reject``), 1 reject
with ``--fail-on-reject``, 2 bad input or a failed check (one-line error on stderr; an unknown flag or a
bad flag value gets argparse's usage line and error).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any, get_type_hints

from transformers import HfArgumentParser

from training.compile import CompileConfig, compile_model
from training.demo_data import write_demo_splits
from training.errors import TrainingError
from training.evaluate import EvaluateConfig, evaluate, write_verdict
from training.finetune import FinetuneConfig, finetune
from training.tensorrt_build import OptimizationProfile

#: Config fields that cannot be flags, with the reason; the configs' defaults apply to them.
NOT_FLAGS = {
    FinetuneConfig: {"extra_tags": "a dict of MLflow tags: API only"},
    CompileConfig: {"profile": "an OptimizationProfile object: built from --trt-batch and --trt-sequence"},
}


def _flags(config_type: type) -> type:
    """``config_type`` minus its ``NOT_FLAGS`` fields: the dataclass HfArgumentParser builds flags from."""
    excluded: Collection[str] = NOT_FLAGS.get(config_type, {})
    hints = get_type_hints(config_type)  # resolves the string annotations of `from __future__`
    fields = [
        (
            f.name,
            hints[f.name],
            dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=f.metadata),
        )
        for f in dataclasses.fields(config_type)
        if f.init and f.name not in excluded
    ]
    return dataclasses.make_dataclass(f"{config_type.__name__}Flags", fields)


def _config(config_type: type, args: argparse.Namespace, **built: Any) -> Any:
    """``config_type`` from the parsed flags of its fields plus ``built`` (the fields that are no flags)."""
    names = {f.name for f in dataclasses.fields(config_type) if f.init}
    return config_type(**{k: v for k, v in vars(args).items() if k in names}, **built)


def _finetune(args: argparse.Namespace) -> int:
    if args.labels:  # `--labels a b c`; `--labels a,b,c` too, as before the flags came from FinetuneConfig
        args.labels = [label for item in args.labels for label in item.split(",") if label]
    output = finetune(_config(FinetuneConfig, args))
    summary = json.loads((output / "training_summary.json").read_text())
    metrics = {k: summary["eval"][k] for k in ("accuracy", "macro_f1")} if summary["eval"] else None
    print(
        json.dumps(
            {
                "output": str(output),
                "steps": summary["steps"],
                "stop_reason": summary["stop_reason"],
                "eval": metrics,
            }
        )
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    verdict = evaluate(_config(EvaluateConfig, args))
    if args.output:
        write_verdict(verdict, args.output)
    summary = (
        verdict.to_dict() if args.verbose else {"decision": verdict.decision, "reasons": verdict.reasons}
    )
    print(json.dumps(summary))
    return 1 if args.fail_on_reject and not verdict.promote else 0


def _compile(args: argparse.Namespace) -> int:
    output = compile_model(
        _config(CompileConfig, args, profile=OptimizationProfile(*args.trt_batch, *args.trt_sequence))
    )
    report = json.loads((output / "compile_report.json").read_text())
    tensorrt = {k: report["tensorrt"].get(k) for k in ("status", "reason") if k in report["tensorrt"]}
    print(json.dumps({"output": str(output), "onnx_parity": report["onnx_parity"], "tensorrt": tensorrt}))
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    paths = write_demo_splits(
        args.output,
        n_train=args.n_train,
        n_eval=args.n_eval,
        n_golden=args.n_golden,
        shift=args.shift,
        seed=args.seed,
    )
    print(json.dumps({name: str(path) for name, path in paths.items()}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    # Every sub-parser is an HfArgumentParser (an ArgumentParser that shows defaults in --help); demo-data has
    # no config dataclass and adds plain arguments.
    sub = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)

    ft = sub.add_parser(
        "finetune", help="fine-tune a sequence classifier", dataclass_types=_flags(FinetuneConfig)
    )
    ft.set_defaults(func=_finetune)

    ev = sub.add_parser(
        "evaluate",
        help="challenger vs champion on the same rows; prints a promote/reject verdict",
        dataclass_types=_flags(EvaluateConfig),
    )
    ev.add_argument("--output", type=Path, help="write the full verdict JSON here")
    ev.add_argument(
        "--verbose", action="store_true", help="print the full verdict, not only decision and reasons"
    )
    ev.add_argument("--fail-on-reject", action="store_true", help="exit 1 when the verdict is reject")
    ev.set_defaults(func=_evaluate)

    co = sub.add_parser(
        "compile",
        help="export to ONNX (and TensorRT on a GPU) with parity checks",
        dataclass_types=_flags(CompileConfig),
    )
    profile = OptimizationProfile()  # the defaults of the two flags that build CompileConfig.profile
    co.add_argument(
        "--trt-batch",
        type=int,
        nargs=3,
        metavar=("MIN", "OPT", "MAX"),
        default=(profile.min_batch, profile.opt_batch, profile.max_batch),
        help="TensorRT profile batch sizes",
    )
    co.add_argument(
        "--trt-sequence",
        type=int,
        nargs=3,
        metavar=("MIN", "OPT", "MAX"),
        default=(profile.min_sequence, profile.opt_sequence, profile.max_sequence),
        help="TensorRT profile sequence lengths",
    )
    co.set_defaults(func=_compile)

    dd = sub.add_parser(
        "demo-data", help="write seeded two-domain demo data (a_train, a_eval, b_train, b_eval, golden)"
    )
    dd.add_argument("--output", type=Path, required=True, help="folder for the Parquet files")
    dd.add_argument("--n-train", type=int, default=800, help="rows per training split")
    dd.add_argument("--n-eval", type=int, default=400, help="rows per eval split")
    dd.add_argument("--n-golden", type=int, default=64, help="golden rows, half per domain")
    dd.add_argument("--shift", type=float, default=1.0, help="how far domain B is from A, in [0, 1]")
    dd.add_argument("--seed", type=int, default=0, help="random seed")
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
