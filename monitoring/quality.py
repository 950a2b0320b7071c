"""Data quality before anything trains: schema, missing values, text length, ranges, duplicates, labels.

Bad rows are quarantined — kept, with every reason, and counted — never silently dropped, so a
reviewer can see what the gate held back. Schema faults (a required column missing or of the wrong
kind) concern the whole table and raise instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitoring.errors import QualitySchemaError

ColumnKind = Literal["text", "numeric", "categorical", "any"]
REASONS_COLUMN = "quality_reasons"


@dataclass(frozen=True)
class QualitySpec:
    """What a usable table looks like. Defaults fit a labelled text-classification table."""

    required: dict[str, ColumnKind] = field(default_factory=lambda: {"text": "text", "label": "categorical"})
    nullable: tuple[str, ...] = ()  # required columns that may be missing per row
    text_column: str | None = "text"
    max_text_chars: int = 10_000  # beyond this the tokenizer truncates anyway: likely a paste or a dump
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # inclusive bounds
    label_column: str | None = "label"
    labels: tuple[str, ...] | None = None  # None: any label is allowed
    duplicate_subset: tuple[str, ...] | None = None  # None: the required columns

    @classmethod
    def for_text_classifier(cls, labels: list[str] | tuple[str, ...], **overrides: Any) -> QualitySpec:
        """The spec for a models-file entry's training or feedback table."""
        return cls(labels=tuple(labels), **overrides)


@dataclass
class QualityResult:
    """Clean rows, quarantined rows (with a ``quality_reasons`` column) and counts per reason."""

    clean: pd.DataFrame
    quarantined: pd.DataFrame
    counts: dict[str, int]

    @property
    def n_rows(self) -> int:
        return len(self.clean) + len(self.quarantined)

    @property
    def quarantine_ratio(self) -> float:
        return len(self.quarantined) / self.n_rows if self.n_rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.n_rows,
            "clean": len(self.clean),
            "quarantined": len(self.quarantined),
            "quarantine_ratio": self.quarantine_ratio,
            "reasons": dict(self.counts),
        }


def _check_schema(df: pd.DataFrame, spec: QualitySpec) -> None:
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        raise QualitySchemaError(f"required column(s) missing: {', '.join(missing)} (have: {', '.join(map(str, df.columns))})")
    wrong = []
    for column, kind in spec.required.items():
        dtype = df[column].dtype
        numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        if kind == "numeric" and not numeric:
            wrong.append(f"{column} must be numeric, is {dtype}")
        if kind == "text" and numeric:
            wrong.append(f"{column} must hold text, is {dtype}")
    for column in spec.ranges:
        if column not in df.columns:
            wrong.append(f"range given for absent column {column}")
        elif not pd.api.types.is_numeric_dtype(df[column].dtype):
            wrong.append(f"range given for non-numeric column {column} ({df[column].dtype})")
    if wrong:
        raise QualitySchemaError("schema mismatch: " + "; ".join(wrong))


def check_quality(df: pd.DataFrame, spec: QualitySpec | None = None) -> QualityResult:
    """Split ``df`` into clean and quarantined rows; every bad row keeps all of its reasons.

    :raises QualitySchemaError: a required column is missing or has the wrong kind.
    """
    spec = spec or QualitySpec()
    _check_schema(df, spec)
    flags: dict[str, np.ndarray] = {}
    for column in spec.required:
        if column not in spec.nullable:
            flags[f"missing:{column}"] = df[column].isna().to_numpy()
    if spec.text_column and spec.text_column in df.columns:
        text = df[spec.text_column]
        stripped_len = text.astype("string").str.strip().str.len()
        flags["empty_text"] = (stripped_len == 0).fillna(False).to_numpy(dtype=bool)
        flags["text_too_long"] = (text.astype("string").str.len() > spec.max_text_chars).fillna(False).to_numpy(dtype=bool)
    for column, (low, high) in spec.ranges.items():
        values = df[column].to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isfinite(values) & ~np.isnan(values)
        if low is not None:
            bad |= values < low
        if high is not None:
            bad |= values > high
        flags[f"out_of_range:{column}"] = bad
    if spec.label_column and spec.labels is not None and spec.label_column in df.columns:
        labels = df[spec.label_column]
        flags["unknown_label"] = (labels.notna() & ~labels.astype(str).isin(spec.labels)).to_numpy()
    subset = list(spec.duplicate_subset or spec.required)
    if subset:
        flags["duplicate"] = df.duplicated(subset=subset, keep="first").to_numpy()
    names = list(flags)
    matrix = np.column_stack([flags[n] for n in names]) if names else np.zeros((len(df), 0), dtype=bool)
    bad_rows = matrix.any(axis=1)
    reasons = [";".join(n for n, hit in zip(names, row, strict=True) if hit) for row in matrix[bad_rows]]
    quarantined = df[bad_rows].copy()
    quarantined[REASONS_COLUMN] = reasons
    counts = {n: int(flags[n].sum()) for n in names if flags[n].any()}
    return QualityResult(clean=df[~bad_rows].copy(), quarantined=quarantined, counts=counts)
