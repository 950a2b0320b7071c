"""``pitcrew stack up | down | status``: the local stack of real servers on 127.0.0.1."""

from __future__ import annotations

import argparse

from pitcrew.cli import CommandError
from pitcrew.settings import get_settings
from pitcrew.stack.components import StackError
from pitcrew.stack.runner import PROFILES, Stack


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stack", help="start, stop or inspect the local stack")
    parser.add_argument("action", choices=["up", "down", "status"], help="what to do with the stack")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        help="embedded (default: SQLite, LocalExecutor) or distributed (PostgreSQL, Redis, Celery "
        "`default` and `gpu` workers); down and status default to the profile the stack was brought up with",
    )
    parser.set_defaults(func=run)


def _print_status(stack: Stack) -> bool:
    healthy = True
    for status in stack.status():
        mark = "healthy" if status.health.ok else f"DOWN ({status.health.detail})"
        healthy = healthy and status.health.ok
        print(f"{status.name:<14} {status.url:<40} {mark}")
    return healthy


def run(args: argparse.Namespace) -> int:
    try:
        stack = Stack(get_settings(), profile=args.profile)
        if args.action == "up":
            stack.up()
            _print_status(stack)
            print(f"profile {stack.profile}; state and logs: {stack.settings.home_dir}")
            return 0
        if args.action == "down":
            stopped = stack.down()
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
            return 0
        return 0 if _print_status(stack) else 1
    except StackError as exc:
        raise CommandError(str(exc)) from exc
