"""Take a batch of feedback labels for one model: validate, join with the inference log, store once.

Used by ``POST /pitcrew/feedback`` (the webhook plugin) and, through it, ``pitcrew feedback import``.
A label must name a request the model served within ``feedback_max_age_days`` and appear in its inference
log: a label for an unknown request id could never join a training window, so it is rejected with that
reason instead of vanishing (a label sent before the log's flush, ~2 s after the request, is rejected
too and can simply be sent again).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from monitoring.inference_log import lookup_requests, write_feedback
from pitcrew.feedback.body import Batch, Rejected, parse_body, validate_rows
from pitcrew.feedback.index import Applied, Joined, LabelIndex
from pitcrew.models_file import ModelEntry, load_models_file
from pitcrew.settings import Settings

log = logging.getLogger(__name__)


class UnknownModel(ValueError):
    """The body names a model the models file does not declare (HTTP 422)."""


@dataclass(frozen=True)
class IngestResult:
    model: str
    applied: Applied
    rejected: list[Rejected] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "accepted": len(self.applied.changed) + len(self.applied.duplicates),
            "new": len(self.applied.new),
            "relabelled": len(self.applied.relabelled),
            "duplicates": len(self.applied.duplicates),
            "rejected": [r.as_dict() for r in self.rejected],
        }


def _epoch(value: datetime | pd.Timestamp | None) -> float | None:
    return None if value is None else float(value.timestamp())


class FeedbackService:
    def __init__(self, models: Mapping[str, ModelEntry], index: LabelIndex) -> None:
        self.models = dict(models)
        self.index = index

    def ingest(self, raw: bytes, *, now: datetime | None = None) -> IngestResult:
        """Validate and store one body.

        :raises FeedbackBodyError: the body as a whole is unusable; nothing stored.
        :raises UnknownModel: the body names an undeclared model; nothing stored.
        :raises IndexBusy, InferenceLogError, OSError: storage failed; nothing stored, retry.
        """
        now = now or datetime.now(UTC)
        model, rows = parse_body(raw)
        entry = self.models.get(model)
        if entry is None:
            raise UnknownModel(f"model {model!r} is not in models.yaml (known: {', '.join(sorted(self.models))})")
        batch = validate_rows(model, rows, entry.labels, now=now)
        joined, unknown = self._join(entry, batch, now)
        rejected = sorted(batch.rejected + unknown, key=lambda r: r.row)
        applied = self.index.apply(
            model,
            joined,
            [r.reason for r in rejected],
            lambda changed: self._store(entry, changed, now),
            now=now.timestamp(),
        )
        log.info(
            "feedback for %s: %d new, %d relabelled, %d duplicates, %d rejected",
            model, len(applied.new), len(applied.relabelled), len(applied.duplicates), len(rejected),
        )  # fmt: skip
        return IngestResult(model, applied, rejected)

    def _join(self, entry: ModelEntry, batch: Batch, now: datetime) -> tuple[list[Joined], list[Rejected]]:
        since = now - timedelta(days=entry.feedback_max_age_days)
        ids = [row.request_id for _, row in batch.rows]
        logged = lookup_requests(entry.inference_log, ids, since=since, model=entry.name).set_index("request_id")
        joined: list[Joined] = []
        unknown: list[Rejected] = []
        for index, row in batch.rows:
            if row.request_id not in logged.index:
                message = (
                    f"no request {row.request_id!r} of model {entry.name} in its inference log of the last "
                    f"{entry.feedback_max_age_days} days (a request is logged ~2 s after it is served)"
                )
                unknown.append(Rejected(index, row.request_id, "unknown_request", message))
                continue
            served = logged.loc[row.request_id]
            request_ts = _epoch(served["timestamp"])
            labelled_at = _epoch(row.labelled_at)
            if labelled_at is not None and labelled_at < request_ts:
                message = f"labelled_at {row.labelled_at.isoformat()} is before the request was served"
                unknown.append(Rejected(index, row.request_id, "invalid_row", message))
                continue
            joined.append(
                Joined(row.request_id, row.label, str(served["version"]), str(served["label"]), request_ts,
                       labelled_at, row.source)
            )  # fmt: skip
        return joined, unknown

    @staticmethod
    def _store(entry: ModelEntry, changed: list[Joined], now: datetime) -> None:
        write_feedback(
            entry.feedback,
            {row.request_id: row.label for row in changed},
            timestamp=now,
            labelled_at={
                row.request_id: datetime.fromtimestamp(row.labelled_at, UTC) for row in changed if row.labelled_at
            },
            sources={row.request_id: row.source for row in changed},
        )


def index_path(home: Path) -> Path:
    return home / "label_index" / "labels.db"


def feedback_from_settings(settings: Settings) -> FeedbackService:
    """The service as configured: models from the models file, the index under ``<home>/label_index``."""
    models = load_models_file(settings.models_file)
    return FeedbackService({m.name: m for m in models.models}, LabelIndex(index_path(settings.home_dir)))
