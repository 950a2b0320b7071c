"""Reference profile: what a drift check needs from the champion's training data, computed once.

Sorting the reference and counting its categories is most of the cost of a check; doing it once
when the champion is registered (and saving it next to the model) makes each later check cheap.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift_config import DriftConfig, Kind, prepare_frame
from monitoring.errors import DriftInputError, ProfileFormatError

FORMAT_VERSION = 1
#: Bins of the PSI: reference deciles.
PSI_BINS = 10


@dataclass
class ColumnProfile:
    """One column of the reference: sorted values (numeric) or category counts (categorical)."""

    name: str
    kind: Kind
    n_missing: int
    sorted_values: np.ndarray | None = None
    std: float = 0.0
    psi_edges: np.ndarray | None = None
    psi_counts: np.ndarray | None = None
    categories: list[str] = field(default_factory=list)
    counts: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Non-missing values."""
        return int(self.sorted_values.size if self.kind == "numeric" else self.counts.sum())


def numeric_values(series: pd.Series) -> tuple[np.ndarray, int]:
    """Ascending non-NaN float64 values and the number of missing ones."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    sorted_values = np.sort(values)  # NaNs sort last, so the first NaN is found by bisection
    n_valid = int(np.searchsorted(sorted_values, np.nan, side="left"))
    return sorted_values[:n_valid], values.size - n_valid


def category_counts(series: pd.Series) -> tuple[list[str], np.ndarray, int]:
    """Categories (as strings), their counts and the number of missing values."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()
        counts = np.bincount(codes[codes >= 0], minlength=len(series.cat.categories))
        keep = counts > 0
        names = [str(c) for c in series.cat.categories[keep]]
        return names, counts[keep].astype(np.int64), int((codes < 0).sum())
    vc = series.value_counts(dropna=True)
    return [str(c) for c in vc.index], vc.to_numpy(dtype=np.int64), int(series.isna().sum())


def counts_between(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin for inner ``edges``; values beyond the outer edges land in the outer bins."""
    cuts = np.searchsorted(sorted_values, edges[1:-1], side="right")
    return np.diff(np.concatenate([[0], cuts, [sorted_values.size]]))


def sorted_quantile(sorted_values: np.ndarray, q: float) -> float:
    """Lower quantile of an already sorted array by indexing (np.quantile would partition a copy)."""
    return float(sorted_values[int(q * (sorted_values.size - 1))])


def histogram(reference_sorted: np.ndarray, current_sorted: np.ndarray, bins: int = 30) -> dict[str, list]:
    """Counts of both samples on shared bins spanning the central 99% of either (for the report)."""
    lo = min(sorted_quantile(reference_sorted, 0.005), sorted_quantile(current_sorted, 0.005))
    hi = max(sorted_quantile(reference_sorted, 0.995), sorted_quantile(current_sorted, 0.995))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return {
        "edges": edges.tolist(),
        "reference": counts_between(reference_sorted, edges).tolist(),
        "current": counts_between(current_sorted, edges).tolist(),
    }


def fit_numeric(name: str, sorted_values: np.ndarray, n_missing: int) -> ColumnProfile:
    profile = ColumnProfile(name=name, kind="numeric", n_missing=n_missing, sorted_values=sorted_values)
    if sorted_values.size:
        profile.std = float(np.std(sorted_values))
        # Inner cuts at the distinct deciles; open outer bins, so even a constant column has two bins.
        cuts = np.unique([sorted_quantile(sorted_values, q) for q in np.linspace(0, 1, PSI_BINS + 1)[1:-1]])
        profile.psi_edges = np.concatenate([[-np.inf], cuts, [np.inf]])
        profile.psi_counts = counts_between(sorted_values, profile.psi_edges)
    return profile


def fit_column(name: str, series: pd.Series, kind: Kind) -> ColumnProfile:
    if kind == "numeric":
        return fit_numeric(name, *numeric_values(series))
    categories, counts, n_missing = category_counts(series)
    return ColumnProfile(name=name, kind="categorical", n_missing=n_missing, categories=categories, counts=counts)


@dataclass
class ReferenceProfile:
    """Per-column reference summaries plus how text columns were turned into features."""

    columns: dict[str, ColumnProfile]
    n_rows: int
    text_columns: list[str] = field(default_factory=list)
    tokenizer_path: str | None = None

    @classmethod
    def fit(cls, reference: pd.DataFrame, config: DriftConfig | None = None) -> ReferenceProfile:
        """Profile ``reference`` with the column choices of a :class:`monitoring.drift_config.DriftConfig`."""
        config = config or DriftConfig()
        frame, kinds, tokenizer_path = prepare_frame(reference, config, kinds=None)
        if not kinds:
            raise DriftInputError("the reference has no columns to check after ignores and column selection")
        with ThreadPoolExecutor(max(1, config.workers)) as pool:  # sorts release the GIL
            fitted = pool.map(lambda item: fit_column(item[0], frame[item[0]], item[1]), kinds.items())
            columns = {col.name: col for col in fitted}
        text_columns = [c for c in config.text_columns if c in reference.columns]
        return cls(columns=columns, n_rows=len(reference), text_columns=text_columns, tokenizer_path=tokenizer_path)

    @property
    def kinds(self) -> dict[str, Kind]:
        return {name: col.kind for name, col in self.columns.items()}

    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` file (no pickle: metadata is JSON, arrays are plain)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "n_rows": self.n_rows,
            "text_columns": self.text_columns,
            "tokenizer_path": self.tokenizer_path,
            "columns": [],
        }
        for i, col in enumerate(self.columns.values()):
            entry = {"name": col.name, "kind": col.kind, "n_missing": col.n_missing, "std": col.std,
                     "categories": col.categories}
            for attr in ("sorted_values", "psi_edges", "psi_counts", "counts"):
                value = getattr(col, attr)
                if value is not None:
                    arrays[f"c{i}_{attr}"] = value
            meta["columns"].append(entry)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if meta.get("format_version") != FORMAT_VERSION:
                    raise ProfileFormatError(
                        f"{path}: profile format {meta.get('format_version')} is not {FORMAT_VERSION}"
                    )
                columns = {}
                for i, entry in enumerate(meta["columns"]):
                    col = ColumnProfile(name=entry["name"], kind=entry["kind"], n_missing=entry["n_missing"],
                                        std=entry["std"], categories=entry["categories"])
                    for attr in ("sorted_values", "psi_edges", "psi_counts", "counts"):
                        key = f"c{i}_{attr}"
                        if key in data.files:
                            setattr(col, attr, data[key])
                    columns[col.name] = col
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, ProfileFormatError):
                raise
            raise ProfileFormatError(f"{path}: not a readable reference profile ({exc})") from exc
        return cls(columns=columns, n_rows=meta["n_rows"], text_columns=meta["text_columns"],
                   tokenizer_path=meta["tokenizer_path"])
