"""Classification metrics and McNemar's test, in numpy and scipy (no scikit-learn needed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


def classification_metrics(y_true: Sequence[int], probabilities: np.ndarray, label_names: Sequence[str],
                           *, ece_bins: int = 15) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and expected calibration error."""
    y_true = np.asarray(y_true, dtype=int)
    probabilities = np.asarray(probabilities, dtype=float)
    y_pred = probabilities.argmax(axis=1) if len(y_true) else np.zeros(0, dtype=int)
    per_class = {}
    f1s = []
    for k, name in enumerate(label_names):
        tp = int(np.sum((y_pred == k) & (y_true == k)))
        predicted = int(np.sum(y_pred == k))
        actual = int(np.sum(y_true == k))
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
        if actual:  # macro-F1 over classes present in the data, so a missing class does not count as 0
            f1s.append(f1)
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "ece": expected_calibration_error(y_true, probabilities, bins=ece_bins),
        "mean_confidence": float(probabilities.max(axis=1).mean()) if len(y_true) else 0.0,
        "per_class": per_class,
    }


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, *, bins: int = 15) -> float:
    """Weighted mean gap between confidence and accuracy over equal-width confidence bins."""
    if len(y_true) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


@dataclass(frozen=True)
class McNemarResult:
    """Discordant pairs and the two-sided p-value; ``b``: only the champion right, ``c``: only the challenger."""

    b: int
    c: int
    statistic: float
    p_value: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar(champion_correct: Sequence[bool], challenger_correct: Sequence[bool], *,
            exact_below: int = 25) -> McNemarResult:
    """McNemar's test on paired correctness; exact binomial when few pairs disagree, else chi² with continuity."""
    a = np.asarray(champion_correct, dtype=bool)
    z = np.asarray(challenger_correct, dtype=bool)
    if a.shape != z.shape:
        raise ValueError(f"paired results differ in length: {a.shape} vs {z.shape}")
    b = int(np.sum(a & ~z))
    c = int(np.sum(~a & z))
    if b + c == 0:
        return McNemarResult(b, c, 0.0, 1.0, "none-discordant")
    if b + c < exact_below:
        p = stats.binomtest(min(b, c), b + c, 0.5).pvalue
        return McNemarResult(b, c, float(min(b, c)), float(min(p, 1.0)), "exact-binomial")
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return McNemarResult(b, c, float(statistic), float(stats.chi2.sf(statistic, 1)), "chi2-continuity")
