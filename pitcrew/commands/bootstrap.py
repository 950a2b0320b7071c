"""``pitcrew bootstrap --model M``: train, compile, register and serve a model's first champion."""

from __future__ import annotations

import argparse
import json

from pitcrew.models_file import load_models_file
from pitcrew.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bootstrap",
        help="train the first champion on the model's train_data, register it and serve it in Triton",
    )
    parser.add_argument("--model", required=True, help="model name from the models file")
    parser.add_argument(
        "--base-model", help="override the entry's base_model (a folder, 'minilm' or a cached hub id)"
    )
    parser.add_argument("--epochs", type=float, help="training epochs (default: the entry's training.epochs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pitcrew.pipeline.bootstrap import bootstrap

    if args.epochs is not None and args.epochs <= 0:
        raise ValueError(f"--epochs must be > 0, got {args.epochs}")
    settings = get_settings()
    entry = load_models_file(settings.models_file).get(args.model)
    result = bootstrap(entry, settings, base_model=args.base_model, epochs=args.epochs)
    print(json.dumps(result))
    return 0
