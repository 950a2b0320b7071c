"""training/calibration.py, and calibration.json through fine-tune and compile into the artifact."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.unit.training_fixtures import TINY_TRAINING
from training.calibration import (
    FILENAME,
    T_BOUNDS,
    Calibration,
    CalibrationError,
    atc_estimate,
    calibrated_confidence,
    fit_atc_threshold,
    fit_temperature,
    read_calibration,
    write_calibration,
)
from training.inference import softmax


def _sampled(true_logits: np.ndarray, seed: int) -> np.ndarray:
    """Labels drawn from softmax(true_logits): the model whose logits these are is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    p = softmax(true_logits)
    return (rng.random((len(p), 1)) > np.cumsum(p, axis=1)).sum(axis=1)


@pytest.mark.parametrize("true_t", [0.5, 2.0, 3.0])
def test_fit_recovers_a_known_temperature(true_t: float) -> None:
    rng = np.random.default_rng(0)
    calibrated_logits = rng.normal(0, 2.5, size=(20_000, 4))
    labels = _sampled(calibrated_logits, seed=1)
    # a model whose logits are the calibrated ones times true_t: dividing by T = true_t undoes it
    fit = fit_temperature(calibrated_logits * true_t, labels, fitted_on="synthetic")
    assert fit.temperature == pytest.approx(true_t, rel=0.05)
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before
    assert fit.rows == 20_000 and fit.fitted_on == "synthetic" and not fit.at_bound


def test_already_calibrated_logits_keep_t_near_one() -> None:
    logits = np.random.default_rng(2).normal(0, 2.0, size=(20_000, 3))
    fit = fit_temperature(logits, _sampled(logits, seed=3), fitted_on="synthetic")
    assert fit.temperature == pytest.approx(1.0, abs=0.05)
    assert fit.nll_after == pytest.approx(fit.nll_before, abs=2e-3)
    np.testing.assert_allclose(
        fit.confidence(softmax(logits)), softmax(logits).max(axis=1), atol=0.02
    )  # fmt: skip


def test_perfect_eval_accuracy_stops_at_the_lower_bound() -> None:
    # every row right: the NLL keeps falling as T -> 0, so only the bound stops it
    logits = np.eye(4)[np.arange(40) % 4] * 2.0
    fit = fit_temperature(logits, np.arange(40) % 4, fitted_on="easy")
    assert fit.temperature == pytest.approx(T_BOUNDS[0], rel=1e-3) and fit.at_bound
    assert fit.nll_after < fit.nll_before


def test_calibrated_confidence_matches_softmax_of_scaled_logits() -> None:
    logits = np.random.default_rng(4).normal(0, 3, size=(50, 5))
    for t in (0.1, 0.7, 1.0, 4.0):
        expected = softmax(logits / t).max(axis=1)
        np.testing.assert_allclose(calibrated_confidence(softmax(logits), t), expected, rtol=1e-9)
    # t = 1 is the identity on the top-class probability
    np.testing.assert_allclose(calibrated_confidence(softmax(logits), 1.0), softmax(logits).max(axis=1))


def test_calibrated_confidence_is_stable_at_the_extremes() -> None:
    # a zero probability (float underflow) and a near-one top class: no NaN, no overflow at small T
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 - 1e-12, 1e-12, 0.0]])
    out = calibrated_confidence(p, 0.05)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [1.0, 0.5, 1.0])
    np.testing.assert_allclose(calibrated_confidence(p, 20.0)[1], 0.5, atol=1e-12)
    assert calibrated_confidence(np.zeros((0, 3)), 2.0).shape == (0,)


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros((0, 3)), np.zeros(0, dtype=int), "no rows"),
        (np.zeros((4,)), np.zeros(4, dtype=int), "shape"),
        (np.zeros((4, 1)), np.zeros(4, dtype=int), "classes >= 2"),
        (np.zeros((4, 3)), np.zeros(3, dtype=int), r"labels must be \[rows\]"),
        (np.zeros((4, 3)), np.array([0, 1, 2, 3]), r"in \[0, 3\)"),
        (np.zeros((4, 3)), np.array([0.0, 1.0, 2.0, 0.0]), "integers"),
        (np.array([[0.0, np.nan, 1.0]]), np.array([0]), "NaN"),
    ],
)
def test_fit_rejects_bad_inputs_by_name(logits, labels, message) -> None:
    with pytest.raises(CalibrationError, match=message):
        fit_temperature(logits, labels, fitted_on="x")


def test_bad_bounds_and_probabilities_are_refused() -> None:
    with pytest.raises(CalibrationError, match="bounds"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 1]), fitted_on="x", bounds=(0.0, 1.0))
    for t in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(CalibrationError, match="temperature"):
            calibrated_confidence(np.full((1, 2), 0.5), t)
    with pytest.raises(CalibrationError, match=">= 0"):
        calibrated_confidence(np.array([[1.2, -0.2]]), 1.0)
    with pytest.raises(CalibrationError, match="shape"):
        calibrated_confidence(np.array([0.5, 0.5]), 1.0)


def test_json_round_trip_and_bad_files(tmp_path: Path) -> None:
    fit = Calibration(2.5, "a_eval", 10, 1.2, 0.9, 0.2, 0.05, atc_threshold=0.7)
    write_calibration(tmp_path, fit)
    raw = json.loads((tmp_path / FILENAME).read_text())
    assert raw == {"method": "temperature", "temperature": 2.5, "fitted_on": "a_eval", "rows": 10,
                   "nll_before": 1.2, "nll_after": 0.9, "ece_before": 0.2, "ece_after": 0.05,
                   "atc_threshold": 0.7}  # fmt: skip
    assert read_calibration(tmp_path) == fit
    assert read_calibration(tmp_path / "nowhere") is None
    for broken, message in [
        ("{not json", "not valid JSON"),
        (json.dumps({**raw, "method": "isotonic"}), "unknown calibration method"),
        (json.dumps({k: v for k, v in raw.items() if k != "rows"}), "lacks 'rows'"),
        (json.dumps({**raw, "temperature": -1}), "temperature must be"),
        (json.dumps({**raw, "temperature": "hot"}), "non-numeric"),
        (json.dumps([1, 2]), "JSON object"),
    ]:
        (tmp_path / FILENAME).write_text(broken)
        with pytest.raises(CalibrationError, match=message):
            read_calibration(tmp_path)


def test_finetune_with_eval_set_writes_the_calibration_it_fitted(tiny_trained: Path) -> None:
    calibration = read_calibration(tiny_trained)
    assert calibration is not None and calibration.rows == 120 and "a_eval" in calibration.fitted_on
    assert T_BOUNDS[0] <= calibration.temperature <= T_BOUNDS[1]
    assert calibration.nll_after <= calibration.nll_before
    assert calibration.atc_threshold is not None and 0 <= calibration.atc_threshold <= 1
    summary = json.loads((tiny_trained / "training_summary.json").read_text())
    assert summary["calibration"] == calibration.to_dict()


def test_finetune_without_eval_set_writes_no_calibration(tmp_path: Path, tiny_base: Path,
                                                         demo_data: dict[str, Path]) -> None:  # fmt: skip
    from training.finetune import FinetuneConfig, finetune

    out = finetune(FinetuneConfig(output_dir=tmp_path / "m", train_data=demo_data["a_train"], eval_fraction=0.0,
                                  base_model=str(tiny_base), **{**TINY_TRAINING, "epochs": 1}))  # fmt: skip
    assert not (out / FILENAME).exists()
    assert json.loads((out / "training_summary.json").read_text())["calibration"] is None


def test_compile_carries_the_calibration_into_the_artifact(tmp_path: Path, tiny_trained: Path,
                                                           demo_data: dict[str, Path]) -> None:  # fmt: skip
    import shutil

    from training.compile import CompileConfig, compile_model

    artifact = compile_model(CompileConfig(model_dir=tiny_trained, output_dir=tmp_path / "artifact",
                                           golden_data=demo_data["golden"], tensorrt="off"))  # fmt: skip
    assert read_calibration(artifact) == read_calibration(tiny_trained)
    report = json.loads((artifact / "compile_report.json").read_text())
    assert report["calibration"] == read_calibration(tiny_trained).to_dict()
    # a checkpoint without one gives an artifact without one; a broken one fails the compile
    bare = tmp_path / "bare"
    shutil.copytree(tiny_trained, bare)
    (bare / FILENAME).unlink()
    out = compile_model(CompileConfig(model_dir=bare, output_dir=tmp_path / "a2", golden_data=demo_data["golden"],
                                      tensorrt="off"))  # fmt: skip
    assert not (out / FILENAME).exists()
    (bare / FILENAME).write_text('{"method": "temperature", "temperature": 0}')
    with pytest.raises(CalibrationError, match="calibration.json"):
        compile_model(CompileConfig(model_dir=bare, output_dir=tmp_path / "a3", golden_data=demo_data["golden"],
                                    tensorrt="off"))  # fmt: skip
    assert not (tmp_path / "a3").exists()


# --- ATC --------------------------------------------------------------------------------------------
def test_atc_threshold_makes_the_eval_share_equal_the_eval_accuracy() -> None:
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.3, 1.0, 1000)
    correct = rng.uniform(size=1000) < confidence  # surer rows are more often right
    threshold = fit_atc_threshold(confidence, correct)
    assert atc_estimate(confidence, threshold) == pytest.approx(correct.mean(), abs=1e-9)
    # a shifted batch whose confidences fall gets a lower estimate
    assert atc_estimate(confidence * 0.8, threshold) < correct.mean() - 0.1


def test_atc_threshold_at_the_extremes() -> None:
    confidence = np.array([0.5, 0.7, 0.9])
    assert fit_atc_threshold(confidence, np.ones(3, bool)) == 0.5  # all right: every eval row counts
    everything_wrong = fit_atc_threshold(confidence, np.zeros(3, bool))
    assert everything_wrong > 0.9 and atc_estimate(confidence, everything_wrong) == 0.0
    assert math.isnan(atc_estimate(np.array([]), 0.5))


@pytest.mark.parametrize(
    ("confidence", "correct", "message"),
    [([], [], "need"), ([0.5, 0.6], [True], "need"), ([1.5], [True], r"\[0, 1\]"), ([np.nan], [True], "finite")],
)
def test_atc_rejects_bad_inputs(confidence, correct, message) -> None:
    with pytest.raises(CalibrationError, match=message):
        fit_atc_threshold(np.array(confidence, dtype=float), np.array(correct, dtype=bool))


def test_a_file_without_atc_threshold_still_reads_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    base = {"method": "temperature", "temperature": 1.0, "fitted_on": "x", "rows": 1,
            "nll_before": 1, "nll_after": 1, "ece_before": 0, "ece_after": 0}  # fmt: skip
    (tmp_path / FILENAME).write_text(json.dumps(base))
    assert read_calibration(tmp_path).atc_threshold is None
    (tmp_path / FILENAME).write_text(json.dumps({**base, "atc_threshold": 2.0}))
    with pytest.raises(CalibrationError, match="atc_threshold"):
        read_calibration(tmp_path)
