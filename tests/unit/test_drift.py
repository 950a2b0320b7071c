"""monitoring.drift: decisions on seeded scenarios, bad input, profiles and corrections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import check_drift
from monitoring.drift_config import DriftConfig
from monitoring.errors import DriftInputError, ProfileFormatError
from monitoring.profile import ReferenceProfile

LABELS = ["billing", "technical", "account", "shipping"]


def frame(rng: np.random.Generator, n: int, *, mean: float = 0.0, scale: float = 1.0, labels=LABELS) -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)],
        "x": rng.normal(mean, scale, n),
        "y": rng.exponential(1.0, n),
        "label": rng.choice(labels, n),
        "confidence": rng.beta(8, 2, n),
    })


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


class TestDecisions:
    def test_same_distribution_is_no_drift(self, rng) -> None:
        report = check_drift(frame(rng, 3000), frame(rng, 3000))
        assert report.decision == "no_drift" and not report.drift
        assert {c.column for c in report.columns} == {"x", "y", "label", "confidence"}  # ids ignored
        assert all(c.p_value_adjusted is not None for c in report.columns)

    @pytest.mark.parametrize(
        ("change", "column"),
        [({"mean": 0.5}, "x"), ({"scale": 2.0}, "x"), ({"labels": LABELS + ["refunds"]}, "label")],
        ids=["mean-shift", "variance-change", "new-category"],
    )
    def test_known_shift_fires_on_the_shifted_column(self, rng, change: dict, column: str) -> None:
        report = check_drift(frame(rng, 3000), frame(rng, 3000, **change))
        assert report.decision == "drift"
        assert [c.column for c in report.columns if c.drifted] == [column]
        assert column in report.reason

    def test_tiny_shift_on_huge_window_is_significant_but_not_drift(self, rng) -> None:
        ref = pd.DataFrame({"x": rng.normal(0, 1, 400_000)})
        cur = pd.DataFrame({"x": rng.normal(0.03, 1, 400_000)})
        report = check_drift(ref, cur)
        col = report.columns[0]
        assert col.p_value_adjusted < 1e-6 and col.effect_size < 0.1
        assert report.decision == "no_drift" and "negligible" in report.reason
        assert check_drift(ref, cur, DriftConfig(require_effect=False)).decision == "drift"

    def test_bonferroni_is_stricter_than_bh(self, rng) -> None:
        ref = pd.DataFrame({f"c{i}": rng.normal(size=2000) for i in range(5)})
        cur = pd.DataFrame({f"c{i}": rng.normal(0.08 if i < 3 else 0.0, 1, 2000) for i in range(5)})
        bh = check_drift(ref, cur, DriftConfig(require_effect=False, correction="bh"))
        bonf = check_drift(ref, cur, DriftConfig(require_effect=False, correction="bonferroni"))
        raw = np.array([c.p_value for c in bh.columns])
        assert [c.p_value_adjusted for c in bonf.columns] == pytest.approx(np.minimum(raw * 5, 1))
        assert all(b.p_value_adjusted >= h.p_value_adjusted for b, h in zip(bonf.columns, bh.columns, strict=True))

    def test_text_domain_shift_fires_on_derived_features(self, rng) -> None:
        short = ["my invoice is wrong", "refund my card please", "billing question"]
        long = ["the kubernetes operator crashloops after upgrading the helm chart to the new version"] * 3
        ref = pd.DataFrame({"text": rng.choice(short, 500)})
        cur = pd.DataFrame({"text": rng.choice(long, 500)})
        report = check_drift(ref, cur)
        assert report.drift
        assert {"text.length", "text.tokens"} <= {c.column for c in report.columns if c.drifted}

    def test_parallel_and_serial_give_the_same_report(self, rng) -> None:
        ref, cur = frame(rng, 2000), frame(rng, 2000, mean=0.3)
        a = check_drift(ref, cur, DriftConfig(workers=1)).to_dict()
        b = check_drift(ref, cur, DriftConfig(workers=4)).to_dict()
        assert a == b


class TestBadInput:
    def test_column_missing_from_current_is_an_error(self, rng) -> None:
        with pytest.raises(DriftInputError, match="missing from the current window: y"):
            check_drift(frame(rng, 500), frame(rng, 500).drop(columns="y"))

    def test_configured_column_missing_from_reference_is_an_error(self, rng) -> None:
        with pytest.raises(DriftInputError, match="not in the reference: nope"):
            check_drift(frame(rng, 500), frame(rng, 500), DriftConfig(columns=("x", "nope")))

    def test_incompatible_dtypes_are_an_error(self, rng) -> None:
        cur = frame(rng, 500)
        cur["x"] = cur["x"].astype(str)
        with pytest.raises(DriftInputError, match="incompatible dtype.*x"):
            check_drift(frame(rng, 500), cur)

    def test_all_nan_column_is_insufficient_data_not_no_drift(self, rng) -> None:
        cur = frame(rng, 500)
        cur["x"] = np.nan
        report = check_drift(frame(rng, 500), cur)
        assert report.decision == "insufficient_data" and "x" in report.reason
        x = next(c for c in report.columns if c.column == "x")
        assert x.status == "insufficient_data" and x.p_value is None and x.missing_current == 500

    def test_drift_elsewhere_still_wins_over_an_empty_column(self, rng) -> None:
        cur = frame(rng, 500, mean=1.0)
        cur["y"] = np.nan
        report = check_drift(frame(rng, 500), cur)
        assert report.decision == "drift" and "insufficient data in y" in report.reason

    @pytest.mark.parametrize("rows", [0, 50])
    def test_small_or_empty_window_is_insufficient_data(self, rng, rows: int) -> None:
        report = check_drift(frame(rng, 500), frame(rng, 500).head(rows), DriftConfig(min_rows=100))
        assert report.decision == "insufficient_data" and not report.drift
        assert f"{rows} row(s)" in report.reason

    @pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"correction": "holm"}, {"min_rows": 1}])
    def test_bad_config_is_rejected(self, kwargs: dict) -> None:
        with pytest.raises(DriftInputError):
            DriftConfig(**kwargs)


class TestProfile:
    def test_saved_profile_gives_the_same_report(self, rng, tmp_path) -> None:
        ref, cur = frame(rng, 4000), frame(rng, 3000, mean=0.2)
        ref["text"] = rng.choice(["a b c", "d e", "f g h i"], 4000)
        cur["text"] = rng.choice(["a b c", "d e"], 3000)
        config = DriftConfig(use_tokenizer=True)
        path = ReferenceProfile.fit(ref, config).save(tmp_path / "profile.npz")
        direct = check_drift(ref, cur, config).to_dict()
        reused = check_drift(ReferenceProfile.load(path), cur, config).to_dict()
        assert direct == reused
        assert "text.unk_rate" in {c["column"] for c in direct["columns"]}

    def test_unreadable_profile_is_a_typed_error(self, tmp_path) -> None:
        bad = tmp_path / "bad.npz"
        bad.write_bytes(b"not a profile")
        with pytest.raises(ProfileFormatError, match="not a readable reference profile"):
            ReferenceProfile.load(bad)

    def test_thresholds_from_the_models_file(self) -> None:
        from pitcrew.models_file import Thresholds

        config = DriftConfig.from_thresholds(Thresholds(drift_alpha=0.01, drift_min_effect=0.2, min_window_rows=300))
        assert (config.alpha, config.numeric_effect_threshold, config.min_rows) == (0.01, 0.2, 300)
