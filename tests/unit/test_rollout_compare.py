from __future__ import annotations

import math

import pytest

from pitcrew.canary import Phase
from pitcrew.rollout.compare import Comparison, StepAnalysis, VersionWindow, class_distance, compare
from pitcrew.rollout.plan import Analysis, Tolerances

MIX = {"billing": 40.0, "technical": 30.0, "account": 20.0, "shipping": 10.0}
TOL = Tolerances()


def _window(version: int, **changes: object) -> VersionWindow:
    values: dict = {"requests": 1000.0, "failures": 0.0, "p99_s": 0.020, "mean_confidence": 0.90,
                    "class_counts": MIX, "labelled": 100, "correct": 90}  # fmt: skip
    values.update(changes)
    return VersionWindow(version, **values)


def _phases(result: Comparison) -> dict[str, str | None]:
    return {c.name: (c.phase.value if c.phase else None) for c in result.checks}


def test_a_challenger_like_the_champion_passes_every_check() -> None:
    result = compare(_window(1), _window(2, p99_s=0.022, mean_confidence=0.88, correct=89), TOL)
    assert result.phase is Phase.SUCCESSFUL, result.reason
    assert set(_phases(result).values()) == {"successful"}


@pytest.mark.parametrize(
    ("changes", "check", "in_reason"),
    [
        ({"failures": 20.0}, "error ratio", "+1.96 points"),  # 20 of 1020 against none
        ({"p99_s": 0.030}, "p99 latency", "1.50x"),
        ({"mean_confidence": 0.80}, "mean confidence", "-0.100"),
        # one class flipped into another: the mix moves
        ({"class_counts": {"billing": 40.0, "technical": 0.0, "account": 50.0, "shipping": 10.0}}, "class mix", ""),
        ({"correct": 80}, "accuracy", "0.800 on 100 labels vs 0.900"),
    ],
)
def test_a_challenger_worse_on_one_measure_fails_on_that_measure_alone(
    changes: dict, check: str, in_reason: str
) -> None:
    result = compare(_window(1), _window(2, **changes), TOL)
    assert result.phase is Phase.FAILED
    failed = [name for name, phase in _phases(result).items() if phase == "failed"]
    assert failed == [check], result.to_dict()
    assert in_reason in result.reason and "worse than the tolerance" in result.reason


def test_better_than_the_champion_is_never_a_failure() -> None:
    better = _window(2, p99_s=0.005, mean_confidence=0.99, correct=100)
    assert compare(_window(1, failures=50.0), better, TOL).phase is Phase.SUCCESSFUL


def test_too_few_requests_is_inconclusive_and_says_which_version() -> None:
    result = compare(_window(1), _window(2, requests=5.0), TOL)
    assert result.phase is Phase.INCONCLUSIVE
    assert "fewer than 20 requests" in result.reason and "version 2 (5)" in result.reason


@pytest.mark.parametrize("changes", [{"p99_s": math.nan}, {"p99_s": None}, {"mean_confidence": math.nan},
                                     {"class_counts": {}}])  # fmt: skip
def test_no_data_or_nan_is_inconclusive_never_a_pass(changes: dict) -> None:
    result = compare(_window(1), _window(2, **changes), TOL)
    assert result.phase is Phase.INCONCLUSIVE, result.to_dict()
    assert "no data" in result.reason


def test_a_failure_wins_over_no_data() -> None:
    result = compare(_window(1), _window(2, p99_s=None, failures=100.0), TOL)
    assert result.phase is Phase.FAILED


def test_accuracy_waits_for_labels_without_holding_the_step() -> None:
    result = compare(_window(1, labelled=10, correct=10), _window(2, labelled=3, correct=0), TOL)
    assert result.phase is Phase.SUCCESSFUL
    assert _phases(result)["accuracy"] is None
    (accuracy,) = [c for c in result.checks if c.name == "accuracy"]
    assert "version 1 has 10, version 2 has 3 of 30 labels needed" in accuracy.reason
    assert result.to_dict()["checks"][-1]["phase"] == "not_measured"


def test_class_distance() -> None:
    assert class_distance(MIX, MIX) == pytest.approx(0.0)
    assert class_distance({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    assert class_distance({"a": 5.0, "b": 5.0}, {"a": 1.0, "b": 1.0}) == pytest.approx(0.0)  # mixes, not counts
    assert math.isnan(class_distance({}, MIX)) and math.isnan(class_distance({"a": 0.0}, MIX))


class TestStepAnalysis:
    def _step(self, failure_limit: int = 0, count: int = 3) -> StepAnalysis:
        return StepAnalysis(weight=10, analysis=Analysis(interval=1, count=count, failure_limit=failure_limit))

    def test_count_successful_measurements_pass(self) -> None:
        step = self._step()
        for _ in range(3):
            assert step.observe(compare(_window(1), _window(2), TOL)) is None
        assert step.done and step.conclude() is Phase.SUCCESSFUL
        assert step.to_dict(Phase.SUCCESSFUL)["reason"] == "challenger within every tolerance in 3 measurements"

    def test_a_failure_beyond_the_limit_ends_the_step_at_once(self) -> None:
        step = self._step(failure_limit=1)
        bad = compare(_window(1), _window(2, p99_s=0.5), TOL)
        assert step.observe(bad) is None  # one failure is tolerated
        assert step.observe(bad) is Phase.FAILED and not step.done
        assert "2 of 2 measurements failed (failure limit 1): p99 latency" in step.to_dict(Phase.FAILED)["reason"]

    def test_an_inconclusive_measurement_goes_to_a_human(self) -> None:
        step = self._step()
        step.observe(compare(_window(1), _window(2), TOL))
        step.observe(compare(_window(1), _window(2, requests=0.0), TOL))
        step.observe(compare(_window(1), _window(2), TOL))
        assert step.conclude() is Phase.INCONCLUSIVE
        assert "a human must decide" in step.to_dict(Phase.INCONCLUSIVE)["reason"]


def test_the_record_is_json_safe_without_nan() -> None:
    import json

    result = compare(_window(1, labelled=0, correct=0), _window(2, p99_s=math.nan, labelled=0, correct=0), TOL)
    text = json.dumps(result.to_dict(), allow_nan=False)  # raises on NaN
    checks = {c["name"]: c for c in json.loads(text)["checks"]}
    assert checks["p99 latency"]["challenger"] is None and checks["accuracy"]["champion"] is None
