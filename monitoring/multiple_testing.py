"""Multiple-testing correction across the columns of one drift check."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import stats

Correction = Literal["bh", "bonferroni", "none"]


def adjust_pvalues(pvalues: np.ndarray, method: Correction) -> np.ndarray:
    """Adjusted p-values: Benjamini–Hochberg (controls the false discovery rate), Bonferroni
    (controls the family-wise error rate) or none. Compare the result with the un-divided alpha."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * p.size, 1.0)
    if method == "bh":
        return stats.false_discovery_control(p, method="bh")
    raise ValueError(f"unknown multiple-testing correction {method!r}; use 'bh', 'bonferroni' or 'none'")
