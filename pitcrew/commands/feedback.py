"""``pitcrew feedback import --model M FILE``: send feedback labels (CSV, Parquet or JSONL) in bulk.

The rows go through ``POST /pitcrew/feedback`` on the Airflow API server, so a file is validated, stored
and counted exactly like labels posted by a labelling tool. Exit 0: every row accepted; 1: some rows were
rejected (listed, with their file row numbers and reasons); 2: an error, e.g. the whole file refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx

from pitcrew.cli import CommandError
from pitcrew.feedback.body import MAX_ROWS
from pitcrew.feedback.client import FeedbackRefused, send_feedback
from pitcrew.feedback.files import FeedbackFileError, read_feedback_file

TOKEN_ENV = "PITCREW_FEEDBACK_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("feedback", help="send feedback labels for served requests")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = actions.add_parser("import", help="import labels from a CSV, Parquet or JSONL file",
                             description="Columns: request_id, label, and optionally labelled_at (ISO 8601 with a "
                             "timezone) and source.")  # fmt: skip
    imp.add_argument("--model", required=True, help="model name from the models file")
    imp.add_argument("file", type=Path, help="CSV, Parquet or JSONL file of labels")
    imp.add_argument("--url", help="Airflow API server (default: the local stack's)")
    imp.add_argument("--token-file", type=Path,
                     help=f"file holding the bearer token (default: ${TOKEN_ENV}, else the local stack's webhook token)")  # fmt: skip
    imp.add_argument("--batch-size", type=int, default=MAX_ROWS, help=f"rows per request (max {MAX_ROWS})")
    imp.set_defaults(func=run_import)


def _token(args: argparse.Namespace) -> str:
    """--token-file, else the feedback_token setting ($PITCREW_FEEDBACK_TOKEN), else the local stack's
    webhook token (read, never generated: a new token here would only be refused there)."""
    from pitcrew.settings import get_settings

    path = args.token_file
    if path is None:
        settings = get_settings()
        if settings.feedback_token.get_secret_value():
            return settings.feedback_token.get_secret_value()
        path = settings.secrets_path / "webhook_token"
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise CommandError(f"no token: cannot read {path} ({exc.strerror}); pass --token-file or set {TOKEN_ENV}") from exc


def run_import(args: argparse.Namespace) -> int:
    if not 1 <= args.batch_size <= MAX_ROWS:
        raise CommandError(f"--batch-size must be in 1..{MAX_ROWS}")
    try:
        rows = read_feedback_file(args.file)
    except FeedbackFileError as exc:
        raise CommandError(str(exc)) from exc
    if not rows:
        raise CommandError(f"{args.file}: no rows")
    if args.url:
        url = args.url
    else:
        from pitcrew.settings import get_settings

        url = get_settings().airflow_url
    try:
        totals = send_feedback(url, _token(args), args.model, rows, batch_size=args.batch_size)
    except FeedbackRefused as exc:
        raise CommandError(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {url}: {exc}") from exc
    print(json.dumps(totals))
    return 1 if totals["rejected"] else 0
