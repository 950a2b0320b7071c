"""``pitcrew secrets [--dir FOLDER] [--check]``: create (or check) the secret files docker-compose.yml mounts.

Creating is idempotent: existing files are never overwritten. ``--check`` writes nothing and exits 1
naming each missing file, which ``docker-compose config`` does not do (it never opens secret files).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pitcrew.cli import CommandError
from pitcrew.settings import REPO_ROOT
from pitcrew.stack.secret_files import ALL_SECRET_FILES, check_secret_files, write_secret_files

#: Where docker-compose.yml looks unless PITCREW_COMPOSE_SECRETS_DIR says otherwise.
DEFAULT_DIR = REPO_ROOT / "deploy" / "secrets"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "secrets", help="create the missing secret files of the compose deployment (never overwrites)"
    )
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"folder of the secret files (default: {DEFAULT_DIR})"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 naming missing or too-open files"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"--dir {folder} is a file; give a folder (created if missing)")
    if args.check:
        problems = check_secret_files(folder)
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"{folder}: all {len(ALL_SECRET_FILES)} secret files present, readable by their owner only")
        return 1 if problems else 0
    try:
        written = write_secret_files(folder)
    except OSError as exc:
        raise CommandError(f"cannot write secret files in {folder}: {exc}") from exc
    for path in written:
        print(f"wrote {path}")
    kept = len(ALL_SECRET_FILES) - len(written)
    print(f"{folder}: {len(written)} written, {kept} already present (left unchanged)")
    # Compose bind-mounts these 0600 files with their owner: containers must run as that uid to read
    # them (docker-compose.yml runs its services as ${PITCREW_UID:-50000}).
    uid = os.getuid()
    if uid == 0:
        print("warning: owned by root: only root in a container can read them (run as the deploying user)")
    else:
        print(f"containers read them as uid {uid}: set PITCREW_UID={uid} in .env beside docker-compose.yml")
    return 0
