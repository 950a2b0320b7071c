"""``pitcrew airflow-init``: migrate Airflow's database, create pools, connections and users (idempotent).

Run it in Airflow's environment: the local stack does before it starts Airflow, compose's
``airflow-init`` service does before any other Airflow service. See :mod:`pitcrew.stack.airflow_init`.
"""

from __future__ import annotations

import argparse

from pitcrew.cli import CommandError
from pitcrew.settings import get_settings
from pitcrew.stack.base import StackError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "airflow-init", help="migrate Airflow's database; create pools, connections and users"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pitcrew.stack.airflow_init import airflow_init

    try:
        for line in airflow_init(get_settings()):
            print(f"airflow-init: {line}")
    except StackError as exc:
        raise CommandError(str(exc)) from exc
    return 0
