"""Two-sample Kolmogorov–Smirnov statistic and Wasserstein distance from one merge of sorted samples.

Why not ``scipy.stats.ks_2samp``: it concatenates and re-sorts both samples and runs two unsorted
``searchsorted`` calls per column. With the reference already sorted (see :mod:`monitoring.profile`),
one stable merge gives both empirical CDFs at every point, so the KS statistic *and* the exact
first Wasserstein distance come out of the same pass. The statistic is computed with the same
floating-point operations as scipy (``count/n1 - count/n2``), so it is bit-identical, and the
p-value uses scipy's own distribution functions with ``ks_2samp(method="auto")`` semantics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: scipy's ``ks_2samp(method="auto")`` computes the exact p-value up to this sample size.
SCIPY_EXACT_MAX_N = 10_000


@dataclass(frozen=True)
class KSResult:
    statistic: float
    pvalue: float
    wasserstein: float


def _merge_statistics(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> tuple[float, float]:
    """KS statistic and Wasserstein-1 distance of two ascending, NaN-free float arrays.

    Ties are handled as scipy does (CDFs are right-continuous; differences are taken only at the
    last element of each run of equal values).
    """
    n1, n2 = reference_sorted.size, current_sorted.size
    merged = np.concatenate([reference_sorted, current_sorted])
    # Both halves are sorted runs, so the stable sort (timsort) is a single linear merge.
    order = np.argsort(merged, kind="stable")
    values = merged[order]
    del merged
    from_ref = np.cumsum(order < n1)
    del order
    from_cur = np.arange(1, n1 + n2 + 1) - from_ref
    diff = from_ref / n1 - from_cur / n2
    del from_ref, from_cur
    gaps = np.diff(values)
    wasserstein = float(np.dot(np.abs(diff[:-1]), gaps))
    run_end = np.empty(values.size, dtype=bool)
    np.not_equal(gaps, 0.0, out=run_end[:-1])
    run_end[-1] = True
    at_ends = diff[run_end]
    statistic = float(max(np.clip(-at_ends.min(), 0, 1), at_ends.max()))
    return statistic, wasserstein


def ks_test(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> KSResult:
    """Two-sided two-sample KS test, statistic and p-value as ``scipy.stats.ks_2samp(method="auto")``.

    Large samples (max size > 10 000) use scipy's asymptotic branch,
    ``kstwo.sf(D, round(n1*n2/(n1+n2)))``: cheap (closed forms or the Pelz–Good series) except
    for mid-range statistics with an effective size ≤ 100 000, where scipy itself uses a matrix
    power. Small samples get scipy's exact p-value from scipy itself (it also rounds the statistic
    to the lattice of possible values, which we keep so both agree).
    """
    n1, n2 = reference_sorted.size, current_sorted.size
    if n1 == 0 or n2 == 0:
        raise ValueError("the KS test needs at least one value on each side")
    statistic, wasserstein = _merge_statistics(reference_sorted, current_sorted)
    if max(n1, n2) <= SCIPY_EXACT_MAX_N:
        exact = stats.ks_2samp(reference_sorted, current_sorted, method="auto")
        return KSResult(float(exact.statistic), float(exact.pvalue), wasserstein)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    pvalue = float(np.clip(stats.kstwo.sf(statistic, np.round(en)), 0, 1))
    return KSResult(statistic, pvalue, wasserstein)
