from __future__ import annotations

import math

import pytest

from pitcrew.canary import CanaryAnalysis, CanaryMetric, CanaryPolicy, Phase, run_canary

ERRORS = CanaryMetric("failure_ratio", "errors", max_value=0.01)
CONFIDENCE = CanaryMetric("confidence", "confidence", min_value=0.6)


def scripted(answers: dict[str, list[list[float]]]):
    """A query function that returns the next scripted answer per query, and records the calls."""
    calls: list[str] = []

    def query(q: str) -> list[float]:
        calls.append(q)
        return answers[q].pop(0)

    return query, calls


class TestCanaryMetric:
    def test_needs_exactly_one_bound(self) -> None:
        with pytest.raises(ValueError, match="exactly one"):
            CanaryMetric("x", "q")
        with pytest.raises(ValueError, match="exactly one"):
            CanaryMetric("x", "q", max_value=1, min_value=0)

    @pytest.mark.parametrize(
        ("values", "phase"),
        [([0.0], Phase.SUCCESSFUL), ([0.01], Phase.SUCCESSFUL), ([0.02], Phase.FAILED), ([0.0, 0.5], Phase.FAILED),
         ([], Phase.INCONCLUSIVE), ([math.nan], Phase.INCONCLUSIVE), ([0.0, math.nan], Phase.INCONCLUSIVE)],
    )  # fmt: skip
    def test_judge_max(self, values: list[float], phase: Phase) -> None:
        assert ERRORS.judge(values) is phase

    def test_judge_min(self) -> None:
        assert CONFIDENCE.judge([0.9]) is Phase.SUCCESSFUL
        assert CONFIDENCE.judge([0.9, 0.5]) is Phase.FAILED


class TestRunCanary:
    def test_all_good_is_successful_after_count_rounds(self) -> None:
        query, calls = scripted({"errors": [[0.0]] * 3, "confidence": [[0.8]] * 3})
        sleeps: list[float] = []
        policy = CanaryPolicy(initial_delay_s=20, interval_s=5, count=3)
        result = run_canary([ERRORS, CONFIDENCE], policy, query, sleeps.append)
        assert result.phase is Phase.SUCCESSFUL
        assert len(result.measurements) == 6
        assert sleeps == [20, 5, 5]
        assert calls == ["errors", "confidence"] * 3

    def test_failure_beyond_limit_stops_early(self) -> None:
        query, calls = scripted({"errors": [[0.0], [0.2], [0.3], [0.0]], "confidence": [[0.8]] * 4})
        result = run_canary(
            [ERRORS, CONFIDENCE], CanaryPolicy(interval_s=0, count=4, failure_limit=1), query, lambda _: None
        )
        assert result.phase is Phase.FAILED
        assert "failure_ratio" in result.reason and "failure limit 1" in result.reason
        assert len(calls) == 5  # stopped at the second failure, before the third round's confidence query

    def test_failure_within_limit_passes(self) -> None:
        query, _ = scripted({"errors": [[0.0], [0.2], [0.0]]})
        result = run_canary(
            [ERRORS], CanaryPolicy(interval_s=0, count=3, failure_limit=1), query, lambda _: None
        )
        assert result.phase is Phase.SUCCESSFUL

    def test_empty_result_is_inconclusive_never_a_pass(self) -> None:
        query, _ = scripted({"errors": [[]] * 3})
        result = run_canary([ERRORS], CanaryPolicy(interval_s=0, count=3), query, lambda _: None)
        assert result.phase is Phase.INCONCLUSIVE
        assert "human" in result.reason

    def test_nan_is_inconclusive(self) -> None:
        query, _ = scripted({"errors": [[math.nan], [0.0]]})
        result = run_canary([ERRORS], CanaryPolicy(interval_s=0, count=2), query, lambda _: None)
        assert result.phase is Phase.INCONCLUSIVE
        assert result.to_dict()["measurements"][0]["values"] == [None]  # JSON-safe

    def test_inconclusive_within_limit(self) -> None:
        query, _ = scripted({"errors": [[math.nan], [0.0], [0.0]]})
        result = run_canary(
            [ERRORS], CanaryPolicy(interval_s=0, count=3, inconclusive_limit=1), query, lambda _: None
        )
        assert result.phase is Phase.SUCCESSFUL

    def test_needs_metrics_and_valid_policy(self) -> None:
        with pytest.raises(ValueError, match="at least one metric"):
            run_canary([], CanaryPolicy(), lambda q: [0.0])
        with pytest.raises(ValueError, match="count"):
            CanaryPolicy(count=0)


#: Scripted answers per query (one per round), with the policy they run under.
SCENARIOS = {
    "all good": ({"errors": [[0.0]] * 3, "confidence": [[0.8]] * 3}, CanaryPolicy(interval_s=0, count=3)),
    "early failure": (
        {"errors": [[0.0], [0.2], [0.3], [0.0]], "confidence": [[0.8]] * 4},
        CanaryPolicy(interval_s=0, count=4, failure_limit=1),
    ),
    "failure within limit": (
        {"errors": [[0.0], [0.2], [0.0]], "confidence": [[0.7]] * 3},
        CanaryPolicy(interval_s=0, count=3, failure_limit=1),
    ),
    "low confidence": (
        {"errors": [[0.0]] * 2, "confidence": [[0.8], [0.3]]},
        CanaryPolicy(interval_s=0, count=2),
    ),
    "no data": ({"errors": [[]] * 2, "confidence": [[0.8]] * 2}, CanaryPolicy(interval_s=0, count=2)),
    "nan within limit": (
        {"errors": [[math.nan], [0.0], [0.0]], "confidence": [[0.8]] * 3},
        CanaryPolicy(interval_s=0, count=3, inconclusive_limit=1),
    ),
}


def stepped(answers: dict[str, list[list[float]]], policy: CanaryPolicy):
    """The analysis driven one observation at a time, as the canary trigger drives it."""
    analysis = CanaryAnalysis([ERRORS, CONFIDENCE], policy)
    for round_index in range(policy.count):
        for metric in analysis.metrics:
            if (ended := analysis.observe(metric, answers[metric.query][round_index])) is not None:
                return ended
    return analysis.conclude()


class TestCanaryAnalysis:
    @pytest.mark.parametrize("name", list(SCENARIOS))
    def test_same_verdict_as_run_canary(self, name: str) -> None:
        answers, policy = SCENARIOS[name]
        query, _ = scripted({q: list(a) for q, a in answers.items()})
        blocking = run_canary([ERRORS, CONFIDENCE], policy, query, lambda _: None)
        assert stepped(answers, policy).to_dict() == blocking.to_dict()

    def test_expected_verdicts(self) -> None:
        phases = {name: stepped(*SCENARIOS[name]).phase for name in SCENARIOS}
        assert phases == {
            "all good": Phase.SUCCESSFUL, "early failure": Phase.FAILED, "failure within limit": Phase.SUCCESSFUL,
            "low confidence": Phase.FAILED, "no data": Phase.INCONCLUSIVE, "nan within limit": Phase.SUCCESSFUL,
        }  # fmt: skip

    def test_observe_ends_only_when_the_failure_limit_is_exceeded(self) -> None:
        analysis = CanaryAnalysis([ERRORS], CanaryPolicy(count=5, failure_limit=1))
        assert analysis.observe(ERRORS, [0.5]) is None  # first failure: within the limit
        assert analysis.observe(ERRORS, []) is None
        ended = analysis.observe(ERRORS, [0.02, 0.5])
        assert ended is not None and ended.phase is Phase.FAILED
        assert "<= 0.01" in ended.reason and "2 time(s)" in ended.reason
        assert [(m.values, m.phase) for m in ended.measurements] == [
            ([0.5], Phase.FAILED),
            ([], Phase.INCONCLUSIVE),
            ([0.02, 0.5], Phase.FAILED),
        ]

    def test_min_bound_failure_names_its_bound(self) -> None:
        analysis = CanaryAnalysis([CONFIDENCE], CanaryPolicy(count=1))
        ended = analysis.observe(CONFIDENCE, [0.2])
        assert ended is not None and ">= 0.6" in ended.reason

    def test_inconclusive_is_counted_per_metric(self) -> None:
        analysis = CanaryAnalysis([ERRORS, CONFIDENCE], CanaryPolicy(count=2, inconclusive_limit=1))
        for values in ([math.nan], [0.0]):
            assert analysis.observe(ERRORS, values) is None
        for values in ([], [0.9]):
            assert analysis.observe(CONFIDENCE, values) is None
        assert analysis.conclude().phase is Phase.SUCCESSFUL  # one each: within the limit of one
        assert analysis.observe(CONFIDENCE, []) is None
        verdict = analysis.conclude()
        assert verdict.phase is Phase.INCONCLUSIVE
        assert "confidence" in verdict.reason and "failure_ratio" not in verdict.reason

    def test_needs_a_metric(self) -> None:
        with pytest.raises(ValueError, match="at least one metric"):
            CanaryAnalysis([], CanaryPolicy())
