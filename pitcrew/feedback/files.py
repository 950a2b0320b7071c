"""Feedback rows from a file (CSV, Parquet or JSONL) for ``pitcrew feedback import``.

Values are passed on as the endpoint takes them; the endpoint validates each row, so a file and a POST
are judged by exactly the same rules. Only the file's own shape (format, required columns, a line that
is not JSON) is checked here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

COLUMNS = ("request_id", "label", "labelled_at", "source")
REQUIRED = ("request_id", "label")


class FeedbackFileError(ValueError):
    """The file cannot be read as feedback rows; the message names the file and the problem."""


def _jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise FeedbackFileError(f"{path} line {number}: not JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise FeedbackFileError(f"{path} line {number}: a row must be a JSON object")
            rows.append(row)
    return rows


def _cell(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()  # a naive timestamp stays naive: the endpoint rejects it by name
    return value if isinstance(value, str) else str(value)


def read_feedback_file(path: Path) -> list[dict]:
    """The rows of ``path`` as dicts with the endpoint's keys (extra columns are refused)."""
    if not path.is_file():
        raise FeedbackFileError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            return _jsonl(path)
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise FeedbackFileError(f"{path}: unsupported format {path.suffix!r}; use .csv, .parquet or .jsonl")
    except (OSError, ValueError) as exc:
        if isinstance(exc, FeedbackFileError):
            raise
        raise FeedbackFileError(f"{path}: cannot read: {exc}") from exc
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise FeedbackFileError(f"{path}: missing column(s) {missing}; expected {', '.join(COLUMNS)}")
    extra = [c for c in frame.columns if c not in COLUMNS]
    if extra:
        raise FeedbackFileError(f"{path}: unknown column(s) {extra}; expected {', '.join(COLUMNS)}")
    return [
        {k: _cell(v) for k, v in record.items() if _cell(v) is not None}
        for record in frame.to_dict(orient="records")
    ]
