"""Canary analysis after a hot-swap, with the semantics of Argo Rollouts' AnalysisRun.

Each metric is a PromQL query and a bound. The analysis takes ``count`` measurements ``interval_s``
apart; a measurement is *successful* when the value is within the bound, *failed* when it is not, and
*inconclusive* when the query returns no series or NaN. The run fails as soon as failures exceed
``failure_limit``; it is inconclusive when inconclusive measurements exceed ``inconclusive_limit``.

An empty or NaN answer is never a pass: a new version that serves no traffic (or whose metrics are
missing) must go to a human, not be promoted silently (argoproj/argo-rollouts#1466 and #180,
fluxcd/flagger#1633 show the failures this causes otherwise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class CanaryMetric:
    """A PromQL query whose single value must stay at most ``max_value`` or at least ``min_value``."""

    name: str
    query: str
    max_value: float | None = None
    min_value: float | None = None

    def __post_init__(self) -> None:
        if (self.max_value is None) == (self.min_value is None):
            raise ValueError(f"canary metric {self.name!r}: give exactly one of max_value or min_value")

    def judge(self, values: Sequence[float]) -> Phase:
        """One measurement: the query's values (one per returned series) against the bound."""
        if len(values) == 0 or any(math.isnan(v) for v in values):
            return Phase.INCONCLUSIVE
        if self.max_value is not None:
            return Phase.SUCCESSFUL if max(values) <= self.max_value else Phase.FAILED
        return Phase.SUCCESSFUL if min(values) >= self.min_value else Phase.FAILED  # type: ignore[operator]


@dataclass(frozen=True)
class CanaryPolicy:
    """``initial_delay_s`` waits before the first measurement (Argo's ``initialDelay``): right after a swap
    the new version has no scraped series yet, which would only ever read as inconclusive."""

    initial_delay_s: float = 0.0
    interval_s: float = 10.0
    count: int = 6
    failure_limit: int = 0
    inconclusive_limit: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("canary count must be at least 1")
        if min(self.initial_delay_s, self.interval_s, self.failure_limit, self.inconclusive_limit) < 0:
            raise ValueError("canary interval and limits must not be negative")


@dataclass(frozen=True)
class Measurement:
    metric: str
    values: list[float]
    phase: Phase


@dataclass
class CanaryResult:
    phase: Phase
    reason: str
    measurements: list[Measurement] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "phase": self.phase.value,
            "reason": self.reason,
            "measurements": [
                {
                    **asdict(m),
                    "values": [None if math.isnan(v) else v for v in m.values],
                    "phase": m.phase.value,
                }
                for m in self.measurements
            ],
        }


class CanaryAnalysis:
    """The analysis as a state machine, fed one measurement at a time.

    The same rules serve a blocking loop (:func:`run_canary`) and the deferred loop of the canary
    trigger, which queries Prometheus asynchronously in Airflow's triggerer; neither re-implements them.
    """

    def __init__(self, metrics: Sequence[CanaryMetric], policy: CanaryPolicy) -> None:
        if not metrics:
            raise ValueError("a canary needs at least one metric")
        self.metrics = list(metrics)
        self.policy = policy
        self.measurements: list[Measurement] = []
        self._failures = {m.name: 0 for m in metrics}
        self._inconclusive = {m.name: 0 for m in metrics}

    def observe(self, metric: CanaryMetric, values: Sequence[float]) -> CanaryResult | None:
        """Record one measurement; a result when it ends the analysis early (failure limit exceeded)."""
        phase = metric.judge(values)
        self.measurements.append(Measurement(metric.name, list(values), phase))
        if phase is Phase.INCONCLUSIVE:
            self._inconclusive[metric.name] += 1
        elif phase is Phase.FAILED:
            self._failures[metric.name] += 1
            if self._failures[metric.name] > self.policy.failure_limit:
                bound = f"<= {metric.max_value}" if metric.max_value is not None else f">= {metric.min_value}"
                return CanaryResult(
                    Phase.FAILED,
                    f"{metric.name} = {list(values)} breached {bound} "
                    f"{self._failures[metric.name]} time(s) (failure limit {self.policy.failure_limit})",
                    self.measurements,
                )
        return None

    def conclude(self) -> CanaryResult:
        """The verdict once every round was measured without an early failure."""
        over = [name for name, n in self._inconclusive.items() if n > self.policy.inconclusive_limit]
        if over:
            return CanaryResult(
                Phase.INCONCLUSIVE,
                f"no data or NaN for {', '.join(over)} in more than {self.policy.inconclusive_limit} of "
                f"{self.policy.count} measurements: a human must decide",
                self.measurements,
            )
        return CanaryResult(
            Phase.SUCCESSFUL,
            f"all {len(self.metrics)} metrics within bounds in {self.policy.count} measurements",
            self.measurements,
        )


def run_canary(
    metrics: Sequence[CanaryMetric],
    policy: CanaryPolicy,
    query: Callable[[str], list[float]],
    sleep: Callable[[float], None] = time.sleep,
) -> CanaryResult:
    """Measure every metric ``policy.count`` times, blocking; stop early once the failure limit is exceeded.

    :param query: runs a PromQL instant query and returns one float per series (empty for no data).
    """
    analysis = CanaryAnalysis(metrics, policy)
    if policy.initial_delay_s:
        sleep(policy.initial_delay_s)
    for round_index in range(policy.count):
        if round_index:
            sleep(policy.interval_s)
        for metric in analysis.metrics:
            if (result := analysis.observe(metric, query(metric.query))) is not None:
                return result
    return analysis.conclude()
