"""What a drift check compares and how: :class:`DriftConfig` and :func:`prepare_frame`.

``prepare_frame`` selects the configured columns, expands text columns into numeric features and
decides each column's :data:`Kind`. Fitting a reference profile (``monitoring.profile``) and checking
a window against it (``monitoring.drift``) both need it, so it lives here, below both: this module
imports neither of them, which keeps the monitoring import graph acyclic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from monitoring.errors import DriftInputError
from monitoring.multiple_testing import Correction
from monitoring.text_features import load_tokenizer, text_features
from pretrained import minilm_dir

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class DriftConfig:
    """How a drift check decides. Defaults follow common practice; each says why."""

    alpha: float = 0.05  # family-wise / FDR level of the whole check, not per column
    correction: Correction = "bh"  # BH keeps power with many columns; "bonferroni" is stricter
    require_effect: bool = True  # significant AND large enough: huge windows make everything significant
    numeric_effect_threshold: float = 0.1  # Wasserstein / reference std (Evidently's default too)
    categorical_effect_threshold: float = 0.1  # Jensen–Shannon distance, base 2
    min_rows: int = 100  # fewer non-missing values on either side → "insufficient_data"
    columns: tuple[str, ...] | None = None  # None: every reference column not ignored
    ignore: tuple[str, ...] = ("request_id", "timestamp", "version", "model")
    categorical_columns: tuple[str, ...] = ()  # numeric-looking codes to treat as categories
    text_columns: tuple[str, ...] = ("text",)  # used when present in the reference
    tokenizer_path: str | None = None  # tokenizer.json or its folder; None: no unknown-token rate
    use_tokenizer: bool = False  # True with tokenizer_path None: the packaged MiniLM tokenizer
    workers: int = 2  # threads over columns; numpy sorts and merges release the GIL

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise DriftInputError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.correction not in ("bh", "bonferroni", "none"):
            raise DriftInputError(f"correction must be 'bh', 'bonferroni' or 'none', got {self.correction!r}")
        if self.min_rows < 2:
            raise DriftInputError(f"min_rows must be at least 2, got {self.min_rows}")

    @classmethod
    def from_thresholds(cls, thresholds: Any, **overrides: Any) -> DriftConfig:
        """From a models-file entry's ``thresholds`` (drift_alpha, drift_min_effect, min_window_rows)."""
        values = {
            "alpha": thresholds.drift_alpha,
            "numeric_effect_threshold": thresholds.drift_min_effect,
            "categorical_effect_threshold": thresholds.drift_min_effect,
            "min_rows": thresholds.min_window_rows,
        }
        return cls(**{**values, **overrides})

    def effect_threshold(self, kind: str) -> float:
        return {
            "numeric": self.numeric_effect_threshold,
            "categorical": self.categorical_effect_threshold,
        }[kind]


def is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def _selected(frame: pd.DataFrame, config: DriftConfig) -> list[str]:
    if config.columns is not None:
        missing = [c for c in config.columns if c not in frame.columns]
        if missing:
            raise DriftInputError(f"configured column(s) not in the reference: {', '.join(missing)}")
        return list(config.columns)
    return [c for c in frame.columns if c not in config.ignore]


def _tokenizer_path(config: DriftConfig) -> str | None:
    if config.tokenizer_path is not None:
        return config.tokenizer_path
    if config.use_tokenizer:
        return str(minilm_dir())
    return None


def prepare_frame(
    frame: pd.DataFrame,
    config: DriftConfig,
    kinds: dict[str, Kind] | None,
    tokenizer_path: str | None = None,
    text_columns: Sequence[str] | None = None,
) -> tuple[dict[str, pd.Series], dict[str, Kind], str | None]:
    """Select columns, expand text columns into features and decide each column's kind.

    Returns the columns as a dict of Series, not a DataFrame: building a frame would consolidate
    (copy) every numeric column into one block.

    With ``kinds`` None (the reference) kinds are inferred; otherwise (the current window) the
    frame must provide every profiled column with a compatible dtype.
    """
    text_columns = tuple(config.text_columns if text_columns is None else text_columns)
    if kinds is None:
        names = _selected(frame, config)
        tokenizer_path = _tokenizer_path(config)
    else:
        sources = [n.rsplit(".", 1)[0] if n.rsplit(".", 1)[0] in text_columns else n for n in kinds]
        names = list(dict.fromkeys(sources))
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise DriftInputError(f"column(s) missing from the current window: {', '.join(missing)}")
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    parts: dict[str, pd.Series] = {}
    inferred: dict[str, Kind] = {}
    for name in names:
        series = frame[name]
        if name in text_columns:
            features = text_features(series, tokenizer)
            for feature in features.columns:
                parts[f"{name}.{feature}"] = features[feature]
                inferred[f"{name}.{feature}"] = "numeric"
            continue
        parts[name] = series
        inferred[name] = (
            "numeric" if is_numeric(series) and name not in config.categorical_columns else "categorical"
        )
    if kinds is not None:
        bad = [
            f"{n} (reference {kinds[n]}, current {inferred[n]}: {frame[n].dtype})"
            for n in kinds
            if n in inferred and inferred[n] != kinds[n]
        ]
        if bad:
            raise DriftInputError(f"incompatible dtype(s): {'; '.join(bad)}")
        lost = [n for n in kinds if n not in inferred]
        if lost:
            raise DriftInputError(f"column(s) missing from the current window: {', '.join(lost)}")
        inferred = dict(kinds)
    return parts, inferred, tokenizer_path
