"""Effect sizes: how large a shift is, independent of how many rows detected it.

A p-value on a million rows flags shifts nobody cares about (the Evidently issue 50 complaint);
pairing it with an effect size that must also clear a threshold keeps decisions meaningful.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import distance

#: Floor for empty bins so PSI stays finite (the common convention).
PSI_EPSILON = 1e-4


def population_stability_index(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI between two count (or proportion) vectors over the same bins."""
    p = np.asarray(expected, dtype=float)
    q = np.asarray(actual, dtype=float)
    p = np.maximum(p / p.sum(), PSI_EPSILON)
    q = np.maximum(q / q.sum(), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon_distance(expected: np.ndarray, actual: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, so it lies in [0, 1]) between two count vectors."""
    p = np.asarray(expected, dtype=float)
    q = np.asarray(actual, dtype=float)
    return float(distance.jensenshannon(p / p.sum(), q / q.sum(), base=2))


def normalised_wasserstein(wasserstein: float, reference_std: float) -> float:
    """Wasserstein-1 in units of the reference standard deviation (floored as Evidently does)."""
    return float(wasserstein / max(reference_std, 1e-3))
