"""Drift check between a reference (the champion's training snapshot) and a current window.

Per column: numeric → two-sample Kolmogorov–Smirnov; categorical → chi-squared on the aligned
category counts; text → KS on derived features (length, tokens, unknown-token rate); embeddings →
MMD permutation test. P-values are corrected across columns (BH or Bonferroni). A column drifts
only when its corrected p-value is below alpha *and* its effect size clears a threshold, so a
negligible shift on a huge window does not count. Too little data is reported as such, never as
"no drift".
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from monitoring.effect_sizes import (
    jensen_shannon_distance,
    normalised_wasserstein,
    population_stability_index,
)
from monitoring.embedding import mmd_test
from monitoring.errors import DriftInputError
from monitoring.ks import ks_test
from monitoring.multiple_testing import Correction, adjust_pvalues
from monitoring.profile import (
    ColumnProfile,
    Kind,
    ReferenceProfile,
    category_counts,
    counts_between,
    histogram,
    is_numeric,
    numeric_values,
)
from monitoring.text_features import load_tokenizer, text_features

Decision = Literal["drift", "no_drift", "insufficient_data"]


@dataclass(frozen=True)
class DriftConfig:
    """How a drift check decides. Defaults follow common practice; each says why."""

    alpha: float = 0.05  # family-wise / FDR level of the whole check, not per column
    correction: Correction = "bh"  # BH keeps power with many columns; "bonferroni" is stricter
    require_effect: bool = True  # significant AND large enough: huge windows make everything significant
    numeric_effect_threshold: float = 0.1  # Wasserstein / reference std (Evidently's default too)
    categorical_effect_threshold: float = 0.1  # Jensen–Shannon distance, base 2
    embedding_effect_threshold: float = 0.01  # MMD² with an RBF kernel; noise level is ~1e-3 at 500 rows
    min_rows: int = 100  # fewer non-missing values on either side → "insufficient_data"
    columns: tuple[str, ...] | None = None  # None: every reference column not ignored
    ignore: tuple[str, ...] = ("request_id", "timestamp", "version", "model")
    categorical_columns: tuple[str, ...] = ()  # numeric-looking codes to treat as categories
    text_columns: tuple[str, ...] = ("text",)  # used when present in the reference
    tokenizer_path: str | None = None  # tokenizer.json or its folder; None: no unknown-token rate
    use_tokenizer: bool = False  # True with tokenizer_path None: the packaged MiniLM tokenizer
    mmd_permutations: int = 200
    mmd_max_samples: int = 500
    workers: int = 2  # threads over columns; numpy sorts and merges release the GIL
    seed: int = 0

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
            "embedding": self.embedding_effect_threshold,
        }[kind]


@dataclass
class ColumnResult:
    """One test of one column. ``p_value`` is None when the column had too little data."""

    column: str
    kind: str
    test: str
    statistic: float | None
    p_value: float | None
    effect_size: float | None
    effect_measure: str
    effect_sizes: dict[str, float] = field(default_factory=dict)
    p_value_adjusted: float | None = None
    drifted: bool = False
    status: Literal["tested", "insufficient_data"] = "tested"
    n_reference: int = 0
    n_current: int = 0
    missing_reference: int = 0
    missing_current: int = 0
    histogram: dict[str, Any] | None = None  # for the HTML report; left out of to_dict()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("histogram")
        return out


@dataclass
class DriftReport:
    """The outcome of a check: dataset decision, its reason, and every column's test."""

    decision: Decision
    reason: str
    columns: list[ColumnResult]
    config: DriftConfig
    n_reference: int
    n_current: int

    @property
    def drift(self) -> bool:
        return self.decision == "drift"

    def to_dict(self) -> dict[str, Any]:
        return {
            "drift": self.drift,
            "decision": self.decision,
            "reason": self.reason,
            "alpha": self.config.alpha,
            "correction": self.config.correction,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "columns": [c.to_dict() for c in self.columns],
        }


# Column selection ------------------------------------------------------------------------------
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
        from training.tiny import minilm_dir

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
        inferred[name] = "numeric" if is_numeric(series) and name not in config.categorical_columns else "categorical"
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


# Per-column tests ------------------------------------------------------------------------------
def _insufficient(ref: ColumnProfile, n_current: int, missing_current: int, test: str, measure: str) -> ColumnResult:
    return ColumnResult(
        column=ref.name, kind=ref.kind, test=test, statistic=None, p_value=None, effect_size=None,
        effect_measure=measure, status="insufficient_data", n_reference=ref.n, n_current=n_current,
        missing_reference=ref.n_missing, missing_current=missing_current,
    )


def _test_numeric(ref: ColumnProfile, series: pd.Series, min_rows: int) -> ColumnResult:
    current, missing = numeric_values(series)
    if min(ref.n, current.size) < min_rows:
        return _insufficient(ref, current.size, missing, "ks", "wasserstein_norm")
    result = ks_test(ref.sorted_values, current)
    w_norm = normalised_wasserstein(result.wasserstein, ref.std)
    psi = population_stability_index(ref.psi_counts, counts_between(current, ref.psi_edges))
    return ColumnResult(
        column=ref.name, kind="numeric", test="ks", statistic=result.statistic, p_value=result.pvalue,
        effect_size=w_norm, effect_measure="wasserstein_norm",
        effect_sizes={"wasserstein_norm": w_norm, "wasserstein": result.wasserstein, "psi": psi},
        n_reference=ref.n, n_current=int(current.size), missing_reference=ref.n_missing, missing_current=missing,
        histogram=histogram(ref.sorted_values, current),
    )


def _test_categorical(ref: ColumnProfile, series: pd.Series, min_rows: int) -> ColumnResult:
    names, counts, missing = category_counts(series)
    n_current = int(counts.sum())
    if min(ref.n, n_current) < min_rows:
        return _insufficient(ref, n_current, missing, "chi2", "jensen_shannon")
    categories = list(ref.categories) + [c for c in names if c not in set(ref.categories)]
    position = {c: i for i, c in enumerate(categories)}
    table = np.zeros((2, len(categories)), dtype=np.int64)
    table[0, : len(ref.categories)] = ref.counts
    table[1, [position[c] for c in names]] = counts
    if table.shape[1] < 2:  # one category on both sides: nothing can differ
        statistic, pvalue = 0.0, 1.0
    else:
        chi2 = stats.chi2_contingency(table)
        statistic, pvalue = float(chi2.statistic), float(chi2.pvalue)
    js = jensen_shannon_distance(table[0], table[1])
    new = [c for c in names if c not in set(ref.categories)]
    return ColumnResult(
        column=ref.name, kind="categorical", test="chi2", statistic=statistic, p_value=pvalue,
        effect_size=js, effect_measure="jensen_shannon",
        effect_sizes={"jensen_shannon": js, "psi": population_stability_index(table[0], table[1]),
                      "new_categories": float(len(new))},
        n_reference=ref.n, n_current=n_current, missing_reference=ref.n_missing, missing_current=missing,
        histogram={"categories": categories, "reference": table[0].tolist(), "current": table[1].tolist()},
    )


def _test_embeddings(reference: np.ndarray, current: np.ndarray, config: DriftConfig) -> ColumnResult:
    n_ref, n_cur = len(reference), len(current)
    if min(n_ref, n_cur) < min(config.min_rows, config.mmd_max_samples):
        return ColumnResult(column="embedding", kind="embedding", test="mmd", statistic=None, p_value=None,
                            effect_size=None, effect_measure="mmd2", status="insufficient_data",
                            n_reference=n_ref, n_current=n_cur)
    result = mmd_test(reference, current, n_permutations=config.mmd_permutations,
                      max_samples=config.mmd_max_samples, seed=config.seed)
    return ColumnResult(column="embedding", kind="embedding", test="mmd", statistic=result.mmd2,
                        p_value=result.pvalue, effect_size=result.mmd2, effect_measure="mmd2",
                        effect_sizes={"mmd2": result.mmd2, "bandwidth": result.bandwidth},
                        n_reference=n_ref, n_current=n_cur)


# The check -------------------------------------------------------------------------------------
def _decide(columns: list[ColumnResult], config: DriftConfig) -> tuple[Decision, str]:
    tested = [c for c in columns if c.status == "tested"]
    adjusted = adjust_pvalues(np.array([c.p_value for c in tested]), config.correction)
    for col, p_adj in zip(tested, adjusted, strict=True):
        col.p_value_adjusted = float(p_adj)
        large = col.effect_size >= config.effect_threshold(col.kind)
        col.drifted = bool(p_adj < config.alpha and (large or not config.require_effect))
    drifted = [c for c in tested if c.drifted]
    negligible = [c for c in tested if not c.drifted and c.p_value_adjusted < config.alpha]
    short = [c.column for c in columns if c.status == "insufficient_data"]
    rule = f"{config.correction}-adjusted p < {config.alpha}" + (" and effect ≥ threshold" if config.require_effect else "")
    if drifted:
        names = ", ".join(f"{c.column} ({c.effect_measure}={c.effect_size:.3g})" for c in drifted)
        reason = f"{len(drifted)} of {len(columns)} column(s) drifted ({rule}): {names}"
        if short:
            reason += f"; insufficient data in {', '.join(short)}"
        return "drift", reason
    if short:
        return "insufficient_data", f"fewer than {config.min_rows} values to compare in: {', '.join(short)}"
    reason = f"no column drifted ({rule}) among {len(tested)} tested"
    if negligible:
        reason += "; significant but negligible effect in " + ", ".join(
            f"{c.column} ({c.effect_measure}={c.effect_size:.3g})" for c in negligible
        )
    return "no_drift", reason


def check_drift(
    reference: pd.DataFrame | ReferenceProfile,
    current: pd.DataFrame,
    config: DriftConfig | None = None,
    *,
    reference_embeddings: np.ndarray | None = None,
    current_embeddings: np.ndarray | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference`` (a frame, or a profile fitted once and reused).

    :raises DriftInputError: columns missing on one side, incompatible dtypes, bad config.
    """
    config = config or DriftConfig()
    profile = reference if isinstance(reference, ReferenceProfile) else ReferenceProfile.fit(reference, config)
    if (reference_embeddings is None) != (current_embeddings is None):
        raise DriftInputError("embedding drift needs embeddings for both the reference and the current window")
    frame, kinds, _ = prepare_frame(current, config, profile.kinds, profile.tokenizer_path, profile.text_columns)
    if len(current) < config.min_rows:
        return DriftReport(
            decision="insufficient_data",
            reason=f"the current window has {len(current)} row(s); at least {config.min_rows} are needed",
            columns=[], config=config, n_reference=profile.n_rows, n_current=len(current),
        )

    def run(name: str) -> ColumnResult:
        test = _test_numeric if kinds[name] == "numeric" else _test_categorical
        return test(profile.columns[name], frame[name], config.min_rows)

    names: Sequence[str] = list(kinds)
    if config.workers > 1:
        with ThreadPoolExecutor(config.workers) as pool:
            columns = list(pool.map(run, names))
    else:
        columns = [run(n) for n in names]
    if reference_embeddings is not None:
        columns.append(_test_embeddings(reference_embeddings, current_embeddings, config))
    decision, reason = _decide(columns, config)
    return DriftReport(decision=decision, reason=reason, columns=columns, config=config,
                       n_reference=profile.n_rows, n_current=len(current))
