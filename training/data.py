"""Loading labelled text from files or from the inference log joined with feedback.

Every loader returns a :class:`LabelledText` whose checks (non-empty, at least two classes, labels known)
run before any model work starts, so bad input fails fast with a message that names the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.errors import DataError

_READERS = {
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
    ".csv": pd.read_csv,
    ".jsonl": lambda path: pd.read_json(path, lines=True),
    ".json": lambda path: pd.read_json(path, lines=True),
}


@dataclass(frozen=True)
class LabelledText:
    """Parallel lists of texts and string labels, plus where they came from (for error messages)."""

    texts: list[str]
    labels: list[str]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"{self.source}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def require_trainable(self) -> None:
        """Fine-tuning needs rows and at least two classes; one class teaches the model nothing."""
        if not self.texts:
            raise DataError(f"{self.source}: no rows to train on")
        classes = set(self.labels)
        if len(classes) < 2:
            raise DataError(f"{self.source}: only one class {sorted(classes)}; need at least two to train")

    def require_known_labels(self, known: Sequence[str]) -> None:
        unknown = sorted(set(self.labels) - set(known))
        if unknown:
            raise DataError(f"{self.source}: labels {unknown} are not among the model's labels {list(known)}")

    def label_ids(self, label_names: Sequence[str]) -> list[int]:
        self.require_known_labels(label_names)
        index = {name: i for i, name in enumerate(label_names)}
        return [index[label] for label in self.labels]


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a Parquet file or dataset folder, CSV or JSONL into a DataFrame."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return pd.read_parquet(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported format {path.suffix!r}; use .parquet, .csv or .jsonl")
    return reader(path)


def from_frame(frame: pd.DataFrame, *, text_column: str = "text", label_column: str = "label",
               source: str = "<frame>") -> LabelledText:
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")
    frame = frame[[text_column, label_column]].dropna()
    return LabelledText(
        texts=[str(t) for t in frame[text_column]],
        labels=[str(label) for label in frame[label_column]],
        source=source,
    )


def load_labelled(path: Path | str, *, text_column: str = "text", label_column: str = "label") -> LabelledText:
    """Load a Parquet/CSV/JSONL file with a text and a label column."""
    return from_frame(read_table(path), text_column=text_column, label_column=label_column, source=str(path))


def load_feedback_join(inference_log: Path | str, feedback: Path | str, *, request_id_column: str = "request_id",
                       text_column: str = "text", label_column: str = "label") -> LabelledText:
    """Join the serving inference log with later feedback labels on the request id.

    Feedback is the ground truth; the logged prediction is ignored. Requests without feedback are
    dropped, and if a request got several labels the last one wins (a human corrected themselves).
    """
    log = read_table(inference_log)
    labels = read_table(feedback)
    for frame, name, columns in ((log, inference_log, (request_id_column, text_column)),
                                 (labels, feedback, (request_id_column, label_column))):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"{name}: missing column(s) {missing}; found {list(frame.columns)}")
    labels = labels[[request_id_column, label_column]].drop_duplicates(request_id_column, keep="last")
    log = log[[request_id_column, text_column]].drop_duplicates(request_id_column, keep="last")
    joined = log.merge(labels, on=request_id_column, how="inner")
    return from_frame(joined, text_column=text_column, label_column=label_column,
                      source=f"{inference_log} joined with {feedback}")
