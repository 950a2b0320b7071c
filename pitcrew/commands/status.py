"""``pitcrew status --model M``: which versions of a model answer requests, and at which weight.

Reads Triton (the versions READY in the model clients call, and the challenger of a weighted rollout,
``<name>__canary``) and the routing table (pitcrew/rollout/routing.py). ``--json`` prints one object.
"""

from __future__ import annotations

import argparse
import json

from pitcrew.cli import CommandError
from pitcrew.rollout.routing import RoutingError, read_routing
from pitcrew.serving.errors import ServingError
from pitcrew.serving.factory import swapper_from_settings
from pitcrew.serving.model_config import canary_model_name


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="which versions of a model serve, at which weight")
    parser.add_argument("--model", required=True, help="model name from the models file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def model_status(model: str) -> dict:
    entry, swapper = swapper_from_settings(model)
    try:
        serving = swapper.serving_version(entry.name)
        table = read_routing(swapper.repository, entry.name)
        canary = swapper.client.ready_versions(canary_model_name(entry.name))
    except (ServingError, RoutingError) as exc:
        raise CommandError(str(exc)) from exc
    versions = []
    # The routing table applies only while its champion serves and its challenger is loaded (model.py).
    if table is not None and table.champion == serving and table.challenger in canary:
        share = 0.0 if table.mode == "shadow" else table.weight
        versions.append({"version": table.champion, "role": "champion", "weight": 100.0 - share})
        versions.append({"version": table.challenger, "role": "challenger", "weight": share, "mode": table.mode})
    elif serving is not None:
        versions.append({"version": serving, "role": "champion", "weight": 100.0})
    return {
        "model": entry.name, "rollout_mode": entry.rollout.mode, "versions": versions,
        "rollout": None if table is None else {"step": table.step, "updated_at": table.updated_at,
                                                 "champion": table.champion, "challenger": table.challenger,
                                                 "weight": table.weight, "mode": table.mode},
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    status = model_status(args.model)
    if args.json:
        print(json.dumps(status))
        return 0
    print(f"{status['model']} (rollout mode {status['rollout_mode']})")
    if not status["versions"]:
        print("  nothing serves")
    for v in status["versions"]:
        extra = " (shadow: answers a copy of every request)" if v.get("mode") == "shadow" else ""
        print(f"  version {v['version']:<6} {v['role']:<10} {v['weight']:6.2f} %{extra}")
    if status["rollout"] is not None:
        print(f"  rollout step {status['rollout']['step']}, weight set at {status['rollout']['updated_at']}")
    return 0
