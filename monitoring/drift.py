"""Drift check between a reference (the champion's training snapshot) and a current window.

Per column: numeric → two-sample Kolmogorov–Smirnov; categorical → chi-squared on the aligned
category counts; text → KS on derived features (length, tokens, unknown-token rate). P-values
are corrected across columns (BH or Bonferroni). A column drifts only when its corrected p-value is
below alpha *and* its effect size clears a threshold, so a negligible shift on a huge window does
not count. Too little data is reported as such, never as "no drift".

What is compared and how is set by :class:`monitoring.drift_config.DriftConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from monitoring.drift_config import DriftConfig, prepare_frame
from monitoring.effect_sizes import (
    jensen_shannon_distance,
    normalised_wasserstein,
    population_stability_index,
)
from monitoring.ks import ks_test
from monitoring.multiple_testing import adjust_pvalues
from monitoring.profile import (
    ColumnProfile,
    ReferenceProfile,
    category_counts,
    counts_between,
    histogram,
    numeric_values,
)

Decision = Literal["drift", "no_drift", "insufficient_data"]


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
) -> DriftReport:
    """Compare ``current`` with ``reference`` (a frame, or a profile fitted once and reused).

    :raises DriftInputError: columns missing on one side, incompatible dtypes, bad config.
    """
    config = config or DriftConfig()
    profile = reference if isinstance(reference, ReferenceProfile) else ReferenceProfile.fit(reference, config)
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
    decision, reason = _decide(columns, config)
    return DriftReport(decision=decision, reason=reason, columns=columns, config=config,
                       n_reference=profile.n_rows, n_current=len(current))
