"""monitoring.ks: the KS statistic and p-value must equal scipy's own; Wasserstein must be right."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from monitoring import ks


def _pair(rng: np.random.Generator, n1: int, n2: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "continuous":
        a, b = rng.normal(size=n1), rng.normal(rng.choice([0.0, 0.004, 0.05]), 1.0, size=n2)
    elif kind == "rounded":  # many ties within and across samples
        a, b = np.round(rng.normal(size=n1), 2), np.round(rng.normal(0.002, 1.0, size=n2), 2)
    else:  # few distinct values
        a, b = rng.integers(0, 30, n1).astype(float), rng.integers(0, 31, n2).astype(float)
    return np.sort(a), np.sort(b)


class TestKsTest:
    @pytest.mark.parametrize("kind", ["continuous", "rounded", "discrete"])
    def test_small_samples_equal_scipy_exactly(self, kind: str) -> None:
        rng = np.random.default_rng(7)
        for _ in range(30):
            a, b = _pair(rng, int(rng.integers(5, 400)), int(rng.integers(5, 400)), kind)
            got, want = ks.ks_test(a, b), stats.ks_2samp(a, b)
            assert got.statistic == want.statistic
            assert got.pvalue == want.pvalue
            assert got.wasserstein == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-12)

    @pytest.mark.parametrize("kind", ["continuous", "rounded", "discrete"])
    def test_large_samples_match_scipy_asymptotic(self, kind: str) -> None:
        rng = np.random.default_rng(11)
        for _ in range(4):
            a, b = _pair(rng, int(rng.integers(150_000, 300_000)), int(rng.integers(20_000, 300_000)), kind)
            got, want = ks.ks_test(a, b), stats.ks_2samp(a, b)  # method="auto" → asymptotic here
            assert got.statistic == want.statistic
            assert abs(got.pvalue - want.pvalue) <= 1e-9
            assert got.wasserstein == pytest.approx(stats.wasserstein_distance(a, b), abs=2e-3 * a.std())

    def test_bracketing_falls_back_to_full_merge_when_bounds_are_loose(self) -> None:
        rng = np.random.default_rng(3)
        a, b = np.sort(rng.normal(size=120_000)), np.sort(rng.normal(size=90_000))
        coarse = ks.ks_statistic(a, b, full_merge_max=0, edges=8)  # 8 brackets: every one qualifies
        fine = ks.ks_statistic(a, b, full_merge_max=0)
        assert coarse[0] == fine[0] == stats.ks_2samp(a, b).statistic

    def test_empty_side_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="at least one value"):
            ks.ks_test(np.array([]), np.array([1.0]))


class TestPValueFunctions:
    @pytest.mark.parametrize("n", [141, 2_000, 90_000, 250_000])
    def test_smirnov_sum_matches_scipy_special(self, n: int) -> None:
        for z in (1.49, 2.4, 4.0):  # scipy's own value is the slow part of this test
            x = z / np.sqrt(n)
            assert ks.smirnov_sf(n, x) == pytest.approx(special.smirnov(n, x), abs=1e-10)

    def test_smirnov_sum_survives_rounding_at_the_last_term(self) -> None:
        n, x = 25_000, 0.009840000000000015  # 1 - x - j/n rounds below zero at the last j
        assert ks.smirnov_sf(n, x) == pytest.approx(special.smirnov(n, x), abs=1e-12)

    def test_smirnov_sum_on_random_sizes_and_statistics(self) -> None:
        rng = np.random.default_rng(5)
        for _ in range(200):
            n, z = int(rng.integers(141, 20_000)), rng.uniform(1.48, 4.5)
            value = ks.smirnov_sf(n, z / np.sqrt(n))
            assert np.isfinite(value) and value == pytest.approx(special.smirnov(n, z / np.sqrt(n)), abs=1e-10)

    def test_kstwo_sf_matches_scipy_in_every_branch(self) -> None:
        for n in (50, 141, 5_000, 99_999, 100_001, 250_000):
            for z in (0.2, 0.6, 1.0, 1.3, 1.6, 2.5, 4.0, 14.0, 25.0):
                d = min(z / np.sqrt(n), 0.99)
                assert abs(ks.kstwo_sf(d, n) - stats.kstwo.sf(d, n)) <= 1e-9
