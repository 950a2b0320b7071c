"""Statistical tests of the tests: false-positive rate under no drift, and power on known shifts.

Small samples keep this fast; the seeds make it deterministic. Effect-size gating is switched off
where the point is the calibration of the corrected p-values themselves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import check_drift
from monitoring.drift_config import DriftConfig
from monitoring.profile import ReferenceProfile

TRIALS = 240
ROWS = 300
ALPHA = 0.05
#: ~2.5 binomial standard deviations of the FPR estimate at TRIALS trials.
TOLERANCE = 2.5 * np.sqrt(ALPHA * (1 - ALPHA) / TRIALS)
CATEGORIES = np.array(["a", "b", "c", "d"])
PROBS = np.array([0.4, 0.3, 0.2, 0.1])


def sample(rng: np.random.Generator, n: int, *, mean=0.0, scale=1.0, probs=PROBS, words=8.0) -> pd.DataFrame:
    lengths = rng.poisson(words, n) + 1
    return pd.DataFrame({
        "num_a": rng.normal(mean, scale, n),
        "num_b": rng.gamma(2.0, 1.0, n),
        "num_c": rng.uniform(0, 1, n),
        "cat": rng.choice(np.append(CATEGORIES, "new")[: len(probs)], n, p=probs),
        "text": [" ".join(["word"] * k) for k in lengths],
    })


def false_positive_rate(correction: str, require_effect: bool) -> float:
    config = DriftConfig(alpha=ALPHA, correction=correction, require_effect=require_effect, workers=1)
    rng = np.random.default_rng(2024)
    fired = 0
    for _ in range(TRIALS):
        profile = ReferenceProfile.fit(sample(rng, ROWS), config)
        fired += check_drift(profile, sample(rng, ROWS), config).drift
    return fired / TRIALS


@pytest.mark.parametrize("correction", ["bh", "bonferroni"])
def test_no_drift_false_positive_rate_stays_at_alpha(correction: str) -> None:
    fpr = false_positive_rate(correction, require_effect=False)
    assert fpr <= ALPHA + TOLERANCE, f"FPR {fpr:.3f} over {TRIALS} trials exceeds {ALPHA} + {TOLERANCE:.3f}"


def test_effect_gate_only_lowers_the_false_positive_rate() -> None:
    assert false_positive_rate("bh", require_effect=True) <= false_positive_rate("bh", require_effect=False)


@pytest.mark.parametrize(
    ("shift", "column"),
    [
        ({"mean": 0.5}, "num_a"),
        ({"scale": 1.8}, "num_a"),
        ({"probs": np.array([0.3, 0.25, 0.15, 0.1, 0.2])}, "cat"),
        ({"words": 20.0}, "text.length"),
    ],
    ids=["mean-shift", "variance-change", "new-category", "text-domain-shift"],
)
def test_known_shifts_fire(shift: dict, column: str) -> None:
    config = DriftConfig(alpha=ALPHA, workers=1)
    rng = np.random.default_rng(7)
    for _ in range(20):
        report = check_drift(sample(rng, ROWS), sample(rng, ROWS, **shift), config)
        assert report.drift, report.reason
        assert column in {c.column for c in report.columns if c.drifted}
