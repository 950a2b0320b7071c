"""``pitcrew deploy --model M --version N [--artifact DIR]``: hot-swap a version into Triton.

Uses the same protocol as the Airflow task (publish, stage and verify, commit or restore). Talks to Triton directly from settings; Airflow need not be running.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pitcrew.cli import CommandError
from pitcrew.serving.errors import ServingError
from pitcrew.serving.factory import deploy_version, swapper_from_settings, target_from_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy", help="publish, load, verify and commit a model version in Triton"
    )
    parser.add_argument("--model", required=True, help="model name from the models file")
    parser.add_argument("--version", required=True, type=int, help="Triton version number to serve")
    parser.add_argument("--artifact", type=Path, help="artifact folder to publish as that version first")
    parser.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for another swap of the model"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    entry, swapper = swapper_from_settings(args.model, lock_timeout_s=args.wait)
    try:
        result = deploy_version(entry, swapper, args.version, args.artifact, target_from_settings())
    except ServingError as exc:
        raise CommandError(str(exc)) from exc
    print(json.dumps(result.as_dict()))
    return 0
