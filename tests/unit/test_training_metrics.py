from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from training.metrics import classification_metrics, expected_calibration_error, mcnemar

LABELS = ["billing", "technical", "account", "shipping"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_metrics_agree_with_scikit_learn(pairs: list[tuple[int, int]]) -> None:
    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p for _, p in pairs])
    probabilities = np.full((len(pairs), 4), 0.1)
    probabilities[np.arange(len(pairs)), y_pred] = 0.7
    got = classification_metrics(y_true, probabilities, LABELS)
    present = sorted(set(y_true))
    assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    precision = precision_score(y_true, y_pred, labels=range(4), average=None, zero_division=0)
    recall = recall_score(y_true, y_pred, labels=range(4), average=None, zero_division=0)
    for k, name in enumerate(LABELS):
        assert got["per_class"][name]["precision"] == pytest.approx(precision[k])
        assert got["per_class"][name]["recall"] == pytest.approx(recall[k])


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident() -> None:
    probabilities = np.tile([0.75, 0.25], (8, 1))
    y_true = np.array([0, 0, 0, 1, 0, 0, 0, 1])  # 75% right at 75% confidence
    assert expected_calibration_error(y_true, probabilities) == pytest.approx(0.0)
    confident = np.tile([0.99, 0.01], (8, 1))
    assert expected_calibration_error(np.ones(8, dtype=int), confident) == pytest.approx(0.99)


def test_mcnemar_exact_and_chi2_paths() -> None:
    champion = np.array([True] * 10 + [False] * 10)
    challenger = np.array([True] * 10 + [True] * 10)  # 10 rows only the challenger gets right
    exact = mcnemar(champion, challenger)
    assert (exact.b, exact.c, exact.method) == (0, 10, "exact-binomial")
    assert exact.p_value == pytest.approx(2 * 0.5**10)
    big_a = np.array([True] * 30 + [False] * 40)
    big_b = np.array([False] * 30 + [True] * 40)
    chi2 = mcnemar(big_a, big_b)
    assert chi2.method == "chi2-continuity"
    assert chi2.statistic == pytest.approx((abs(30 - 40) - 1) ** 2 / 70)
    assert mcnemar(champion, champion).p_value == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar(champion, challenger[:3])
