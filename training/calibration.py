"""Confidence calibration fitted on the evaluation set at training time: a temperature and an ATC threshold.

One scalar ``T`` divides the logits: ``softmax(z / T)``. It never changes the predicted class, only how sure
the model says it is; fitted by minimising the negative log-likelihood on held-out labelled rows (Guo et al.,
2017). The mean calibrated top-class confidence of served traffic is then an estimate of the accuracy
before any label arrives (what NannyML's CBPE does for tabular models). Like every confidence-based
estimator it assumes the eval set looks like the traffic: under a shift the model is confidently wrong on,
the estimate is too high (benchmarks/estimated_accuracy.py measures how much).

The estimate pitcrew serves is the other fit, Average Thresholded Confidence (ATC; Garg et al., ICLR 2022,
"Leveraging unlabeled data to predict out-of-distribution performance"): the threshold ``t`` such that the
share of eval rows whose top-class confidence is at or above ``t`` equals the eval accuracy; on served
traffic, the share of texts at or above ``t`` estimates the accuracy. A mean of confidences moves little
when a shift makes the model unsure of some texts; a share above a threshold moves with each such text
(benchmarks/estimated_accuracy.py compares both on the demo's shift).

The fit is stored as ``calibration.json`` in the model folder and the artifact (docs/model-artifact.md);
the Triton front (``model_repository/textclf/model.py``) applies the same formula to the probabilities it
already has: ``softmax(log p / T)`` equals ``softmax(z / T)`` because the log-sum-exp shift cancels.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.errors import TrainingError
from training.metrics import expected_calibration_error

FILENAME = "calibration.json"
METHOD = "temperature"
#: Bounds of T. With 100 % accuracy on the eval set the NLL keeps falling as T -> 0 (every logit scaled up
#: makes each correct answer surer), so the unbounded optimum is T = 0 and confidence 1.0 everywhere;
#: the lower bound stops it there (the fit then sits at the bound and says so through ``at_bound``).
#: Above 20 the probabilities are nearly uniform for any realistic logit range.
T_BOUNDS = (0.05, 20.0)


class CalibrationError(TrainingError, ValueError):
    """Inputs that cannot be calibrated, or a calibration file that cannot be read."""


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did on the rows it was fitted on (``*_before``: T = 1)."""

    temperature: float
    fitted_on: str
    rows: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    method: str = METHOD
    #: ATC threshold on the raw top-class confidence (:func:`fit_atc_threshold`); None in files written
    #: before it existed, and then the front exports no estimate.
    atc_threshold: float | None = None

    @property
    def at_bound(self) -> bool:
        """True when the fit stopped at a bound of :data:`T_BOUNDS` (e.g. 100 % eval accuracy)."""
        return any(math.isclose(self.temperature, b, rel_tol=1e-3) for b in T_BOUNDS)

    def confidence(self, probabilities: np.ndarray) -> np.ndarray:
        return calibrated_confidence(probabilities, self.temperature)

    def to_dict(self) -> dict:
        fields = asdict(self)
        return {"method": fields.pop("method"), **fields}

    @classmethod
    def from_dict(cls, raw: object) -> Calibration:
        if not isinstance(raw, dict):
            raise CalibrationError(f"a calibration must be a JSON object, got {type(raw).__name__}")
        if raw.get("method") != METHOD:
            raise CalibrationError(f"unknown calibration method {raw.get('method')!r} (known: {METHOD!r})")
        try:
            calibration = cls(
                temperature=float(raw["temperature"]), fitted_on=str(raw["fitted_on"]), rows=int(raw["rows"]),
                nll_before=float(raw["nll_before"]), nll_after=float(raw["nll_after"]),
                ece_before=float(raw["ece_before"]), ece_after=float(raw["ece_after"]),
                atc_threshold=None if raw.get("atc_threshold") is None else float(raw["atc_threshold"]),
            )  # fmt: skip
        except KeyError as exc:
            raise CalibrationError(f"calibration lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"calibration has a non-numeric field: {exc}") from None
        _check_temperature(calibration.temperature)
        threshold = calibration.atc_threshold
        if threshold is not None and not (math.isfinite(threshold) and 0 <= threshold <= 1):
            raise CalibrationError(f"atc_threshold must be in [0, 1], got {threshold}")
        return calibration


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise CalibrationError(f"temperature must be finite and > 0, got {temperature}")


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, *, fitted_on: str, bounds: tuple[float, float] = T_BOUNDS
) -> Calibration:
    """The T in ``bounds`` that minimises the NLL of ``softmax(logits / T)`` on ``labels``.

    :param logits: ``[rows, classes]`` finite floats, classes >= 2.
    :param labels: ``[rows]`` class indices into the logits' columns.
    :param fitted_on: which split the rows are (goes into the file, so a reader knows).
    :raises CalibrationError: empty, misshapen, non-finite or out-of-range inputs.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise CalibrationError(f"logits must be [rows, classes >= 2], got shape {logits.shape}")
    if len(logits) == 0:
        raise CalibrationError("no rows to calibrate on")
    if labels.shape != (len(logits),):
        raise CalibrationError(f"labels must be [rows] = [{len(logits)}], got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise CalibrationError(f"labels must be class indices (integers), got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise CalibrationError(
            f"labels must be in [0, {logits.shape[1]}), got {labels.min()}..{labels.max()}"
        )
    if not np.all(np.isfinite(logits)):
        raise CalibrationError("logits contain NaN or infinity")
    low, high = bounds
    if not 0 < low < high:
        raise CalibrationError(f"bounds must satisfy 0 < low < high, got {bounds}")
    # over log T: the NLL is smoother there and T stays positive
    result = minimize_scalar(
        lambda log_t: _nll(logits, labels, math.exp(log_t)),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    # Brent stops where the NLL is flat to float precision (e.g. all rows right: NLL ~ 1e-16 near the lower
    # bound), and may miss T = 1 by xatol: take the best of its answer, T = 1 and the bounds, so the fit is
    # never worse than raw confidence and a perfect eval set lands exactly on the bound
    candidates = [float(min(max(math.exp(result.x), low), high)), low, high] + (
        [1.0] if low <= 1 <= high else []
    )
    nlls = [_nll(logits, labels, t) for t in candidates]
    best = int(np.argmin(nlls))
    temperature, nll_after, nll_before = candidates[best], nlls[best], _nll(logits, labels, 1.0)
    return Calibration(
        temperature=temperature, fitted_on=fitted_on, rows=int(len(labels)),
        nll_before=nll_before, nll_after=nll_after,
        ece_before=expected_calibration_error(labels, _softmax(logits)),
        ece_after=expected_calibration_error(labels, _softmax(logits / temperature)),
    )  # fmt: skip


def fit_atc_threshold(confidence: np.ndarray, correct: np.ndarray) -> float:
    """The ATC threshold: ``t`` with ``mean(confidence >= t) == mean(correct)`` on the eval rows.

    It is the (1 - accuracy) quantile of the eval confidences (the lowest value kept when every row is
    right, so the eval set itself estimates 100 %). A threshold on raw top-class confidence, because the
    front counts texts at or above it without recomputing anything.

    :raises CalibrationError: empty or mismatched inputs, or confidences outside [0, 1].
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.ndim != 1 or len(confidence) == 0 or correct.shape != confidence.shape:
        raise CalibrationError(f"need [rows] confidences and [rows] correctness, got {confidence.shape} and {correct.shape}")
    if not np.all(np.isfinite(confidence)) or confidence.min() < 0 or confidence.max() > 1:
        raise CalibrationError("confidences must be finite and in [0, 1]")
    ordered = np.sort(confidence)
    wrong = int(len(ordered) - correct.sum())  # this many rows fall below t
    return float(ordered[wrong]) if wrong < len(ordered) else float(np.nextafter(ordered[-1], 2.0))


def atc_estimate(confidence: np.ndarray, threshold: float) -> float:
    """The ATC accuracy estimate of a batch: the share of top-class confidences at or above ``threshold``."""
    confidence = np.asarray(confidence, dtype=np.float64)
    return float(np.mean(confidence >= threshold)) if len(confidence) else float("nan")


def calibrated_confidence(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Top-class confidence of ``softmax(log p / T)`` per row of a probability matrix.

    Computed as ``1 / sum_j exp((log p_j - log p_top) / T)``: every exponent is <= 0, so nothing overflows.
    A probability that underflowed to 0 is taken as the smallest float64 (log = -708), far below any class
    that matters.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    _check_temperature(float(temperature))
    if probabilities.ndim != 2 or probabilities.shape[1] < 1:
        raise CalibrationError(f"probabilities must be [rows, classes], got shape {probabilities.shape}")
    if not np.all(np.isfinite(probabilities)) or (probabilities < 0).any():
        raise CalibrationError("probabilities must be finite and >= 0")
    if len(probabilities) == 0:
        return np.zeros(0)
    log_p = np.log(np.maximum(probabilities, np.finfo(np.float64).tiny))
    gaps = (log_p - log_p.max(axis=1, keepdims=True)) / temperature
    return 1.0 / np.exp(gaps).sum(axis=1)


def write_calibration(folder: Path, calibration: Calibration) -> Path:
    path = Path(folder) / FILENAME
    path.write_text(json.dumps(calibration.to_dict(), indent=2))
    return path


def read_calibration(folder: Path) -> Calibration | None:
    """``folder/calibration.json``, or ``None`` when there is none (then confidence is used raw, T = 1)."""
    path = Path(folder) / FILENAME
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise CalibrationError(f"{path}: not valid JSON: {exc}") from None
    try:
        return Calibration.from_dict(raw)
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from None
