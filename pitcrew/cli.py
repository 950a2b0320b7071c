"""The ``pitcrew`` command line.

Each sub-command lives in its own module under :mod:`pitcrew.commands` and exposes
``register(subparsers)``; modules are discovered, so adding a command touches no other file.
Exit codes: 0 success, 1 a negative answer the caller may act on (e.g. drift found), 2 an error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from pitcrew import commands


class CommandError(Exception):
    """A command failed for a reason the user can act on; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitcrew", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Libraries (exporters, HTTP clients) log every step at INFO; only pitcrew's own steps are shown.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for ours in ("pitcrew", "training", "monitoring", "operators"):
        logging.getLogger(ours).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (CommandError, ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pitcrew {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
