"""``pitcrew models check|list``: validate and show the models file."""

from __future__ import annotations

import argparse
import json

from pitcrew.models_file import load_models_file
from pitcrew.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="validate or list the models file")
    parser.add_argument(
        "action", choices=["check", "list"], help="check: validate; list: print entries as JSON"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = get_settings().models_file
    models = load_models_file(path)
    if args.action == "check":
        print(f"{path}: {len(models.models)} model(s) valid: {', '.join(m.name for m in models.models)}")
    else:
        print(json.dumps([m.model_dump() for m in models.models], indent=2))
    return 0
