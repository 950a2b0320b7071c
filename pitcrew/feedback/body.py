"""The feedback body and its rows, validated one row at a time so every error names its row.

A body is ``{"model": "<name>", "feedback": [{"request_id", "label", "labelled_at"?, "source"?}, ...]}``.
A malformed body (not JSON, no model, no list, too many rows) is refused whole; a malformed row is
rejected alone, with its index and reason, and the other rows still count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

#: A batch larger than this is refused whole: split it (``pitcrew feedback import`` does).
MAX_ROWS = 10_000
#: Labeller clocks drift; a ``labelled_at`` further ahead of the server than this is an error, not a lag.
MAX_FUTURE_SKEW = timedelta(minutes=5)

#: Why a row was rejected; ``pitcrew_feedback_labels_rejected_total`` has one series each.
REASONS = ("invalid_row", "unknown_label", "repeated_in_batch", "unknown_request")


class FeedbackBodyError(ValueError):
    """The body as a whole is unusable (HTTP 400 for syntax, 422 for content); nothing was stored."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class FeedbackRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    request_id: str = Field(min_length=1, max_length=128)
    label: str = Field(min_length=1, max_length=256)
    labelled_at: AwareDatetime | None = None
    source: str | None = Field(None, max_length=128)


@dataclass(frozen=True)
class Rejected:
    row: int
    request_id: str | None
    reason: str
    message: str

    def as_dict(self) -> dict:
        return {"row": self.row, "request_id": self.request_id, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class Batch:
    model: str
    rows: list[tuple[int, FeedbackRow]]  # (index in the body, row), valid so far
    rejected: list[Rejected]


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "row"
    return f"{where}: {error['msg']}"


def parse_body(raw: bytes) -> tuple[str, list[object]]:
    """(model, raw rows) of a body, or :class:`FeedbackBodyError` naming what is wrong with it."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedbackBodyError(f"body is not JSON: {exc}", status=400) from exc
    if not isinstance(body, dict):
        raise FeedbackBodyError("body must be a JSON object with 'model' and 'feedback'", status=400)
    unknown = sorted(set(body) - {"model", "feedback"})
    if unknown:
        raise FeedbackBodyError(f"unknown field(s) {unknown}; a body has 'model' and 'feedback'")
    model, rows = body.get("model"), body.get("feedback")
    if not isinstance(model, str) or not model:
        raise FeedbackBodyError("'model' must be the name of a model in models.yaml")
    if not isinstance(rows, list) or not rows:
        raise FeedbackBodyError("'feedback' must be a non-empty list of {request_id, label} rows")
    if len(rows) > MAX_ROWS:
        raise FeedbackBodyError(f"'feedback' has {len(rows)} rows; at most {MAX_ROWS} per request (split it)")
    return model, rows


def validate_rows(
    model: str, rows: Sequence[object], labels: Iterable[str], *, now: datetime | None = None
) -> Batch:
    """Check each row's shape, label and timestamp; a request id given twice keeps its first row only.

    A repeat within one batch is rejected rather than resolved: two labels for one request in one
    message mean the sender is confused, and picking one silently would hide it.
    """
    allowed = list(labels)
    allowed_set = set(allowed)
    now = now or datetime.now(UTC)
    valid: list[tuple[int, FeedbackRow]] = []
    rejected: list[Rejected] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(rows):
        request_id = raw.get("request_id") if isinstance(raw, dict) else None
        request_id = request_id if isinstance(request_id, str) else None
        try:
            row = FeedbackRow.model_validate(raw)
        except ValidationError as exc:
            rejected.append(Rejected(index, request_id, "invalid_row", _first_error(exc)))
            continue
        if row.label not in allowed_set:
            message = f"label {row.label!r} is not one of the model's labels: {', '.join(allowed)}"
            rejected.append(Rejected(index, row.request_id, "unknown_label", message))
            continue
        if row.labelled_at is not None and row.labelled_at - now > MAX_FUTURE_SKEW:
            message = f"labelled_at {row.labelled_at.isoformat()} is in the future (server time {now.isoformat()})"
            rejected.append(Rejected(index, row.request_id, "invalid_row", message))
            continue
        if row.request_id in seen:
            message = f"request_id already given in row {seen[row.request_id]} of this batch"
            rejected.append(Rejected(index, row.request_id, "repeated_in_batch", message))
            continue
        seen[row.request_id] = index
        valid.append((index, row))
    return Batch(model, valid, rejected)
