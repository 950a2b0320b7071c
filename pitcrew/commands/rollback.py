"""``pitcrew rollback --model M [--version N]``: serve the previous version of a model again.

The previous version's files were kept, so this is the same load-beside-then-commit swap as a deploy.
"""

from __future__ import annotations

import argparse
import json

from pitcrew.cli import CommandError
from pitcrew.serving.errors import ServingError
from pitcrew.serving.factory import swapper_from_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rollback", help="swap a model back to its previous version in Triton")
    parser.add_argument("--model", required=True, help="model name from the models file")
    parser.add_argument("--version", type=int, help="version to go back to (default: the previous one)")
    parser.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for another swap of the model"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    entry, swapper = swapper_from_settings(args.model, lock_timeout_s=args.wait)
    try:
        result = swapper.rollback(entry.name, args.version)
    except ServingError as exc:
        raise CommandError(str(exc)) from exc
    print(json.dumps(result.as_dict()))
    return 0
