"""Challenger against champion over the same window: one measurement of a rollout step's analysis.

Flagger and Argo Rollouts judge a canary by comparing it with the primary, not by absolute bounds alone:
both versions serve the same traffic mix at the same time (requests are split by a hash of their id), so
what differs between them in one window is the version. Each check is *successful*, *failed* (the
challenger is worse than the champion by more than the model's tolerance), *inconclusive* (no data, NaN,
or too few requests to judge) or not measured (accuracy before enough feedback labels arrived, which
labels being optional must not hold a rollout up). The measurement takes the worst phase of its checks.

A step runs ``count`` measurements (:class:`StepAnalysis`, with Argo's semantics as in
:mod:`pitcrew.canary`): it fails once failed measurements exceed ``failure_limit``; any inconclusive
measurement makes it inconclusive, for a human to decide, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from scipy.spatial.distance import jensenshannon

from pitcrew.canary import Phase
from pitcrew.rollout.plan import Analysis, Tolerances


@dataclass(frozen=True)
class VersionWindow:
    """What one version did in one analysis window (increases over the window, not totals)."""

    version: int
    requests: float
    failures: float = 0.0
    p99_s: float | None = None
    mean_confidence: float | None = None
    class_counts: Mapping[str, float] = field(default_factory=dict)
    labelled: int = 0
    correct: int = 0

    @property
    def failure_ratio(self) -> float:
        total = self.requests + self.failures
        return self.failures / total if total else math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.labelled if self.labelled else math.nan


@dataclass(frozen=True)
class Check:
    name: str
    phase: Phase | None  # None: not measured, does not count
    champion: float | None
    challenger: float | None
    reason: str


@dataclass(frozen=True)
class Comparison:
    phase: Phase
    checks: list[Check]

    @property
    def reason(self) -> str:
        worst = [c for c in self.checks if c.phase is self.phase] or self.checks
        return "; ".join(c.reason for c in worst)

    def to_dict(self) -> dict:
        """JSON-safe (no NaN: it travels through trigger events, XCom and Postgres's JSON)."""
        return {
            "phase": self.phase.value,
            "reason": self.reason,
            "checks": [
                {**asdict(c), "champion": _number(c.champion), "challenger": _number(c.challenger),
                 "phase": c.phase.value if c.phase else "not_measured"}
                for c in self.checks
            ],
        }  # fmt: skip


def _number(value: float | None) -> float | None:
    return float(value) if _known(value) else None


def _known(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _check(name: str, champion: float | None, challenger: float | None, worse_by: float | None,
           limit: float, describe: str) -> Check:  # fmt: skip
    """``worse_by``: how much worse the challenger is (None when either side has no data)."""
    if worse_by is None or not (_known(champion) and _known(challenger)):
        return Check(name, Phase.INCONCLUSIVE, champion, challenger, f"{name}: no data for one of the versions")
    failed = worse_by > limit
    verdict = "worse than the tolerance" if failed else "within the tolerance"
    return Check(name, Phase.FAILED if failed else Phase.SUCCESSFUL, champion, challenger,
                 f"{name}: {describe} ({verdict} {limit:g})")  # fmt: skip


def class_distance(champion: Mapping[str, float], challenger: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2, 0 to 1) between two predicted-class mixes; NaN if either is empty."""
    labels = sorted(set(champion) | set(challenger))
    p = [max(float(champion.get(k, 0.0)), 0.0) for k in labels]
    q = [max(float(challenger.get(k, 0.0)), 0.0) for k in labels]
    if not labels or sum(p) <= 0 or sum(q) <= 0:
        return math.nan
    return float(jensenshannon(p, q, base=2))


def compare(champion: VersionWindow, challenger: VersionWindow, tolerances: Tolerances) -> Comparison:
    """One measurement: the challenger against the champion over the same window."""
    thin = [w for w in (champion, challenger) if not w.requests + w.failures >= tolerances.min_requests]
    if thin:
        named = ", ".join(f"version {w.version} ({w.requests + w.failures:g})" for w in thin)
        check = Check("traffic", Phase.INCONCLUSIVE, champion.requests, challenger.requests,
                      f"traffic: fewer than {tolerances.min_requests} requests in the window for {named}")  # fmt: skip
        return Comparison(Phase.INCONCLUSIVE, [check])

    checks = []
    a, b = champion.failure_ratio, challenger.failure_ratio
    checks.append(_check("error ratio", a, b, b - a, tolerances.error_ratio,
                         f"{b:.4f} vs {a:.4f}, {100 * (b - a):+.2f} points"))  # fmt: skip
    a, b = champion.p99_s, challenger.p99_s
    ratio = b / a if _known(a) and _known(b) and a > 0 else None  # type: ignore[operator]
    checks.append(_check("p99 latency", a, b, ratio, tolerances.p99_latency_ratio,
                         f"{_ms(b)} vs {_ms(a)}, {ratio or math.nan:.2f}x"))  # fmt: skip
    a, b = champion.mean_confidence, challenger.mean_confidence
    drop = a - b if _known(a) and _known(b) else None  # type: ignore[operator]
    checks.append(_check("mean confidence", a, b, drop, tolerances.confidence_drop,
                         f"{_f(b)} vs {_f(a)}, {-(drop or 0):+.3f}"))  # fmt: skip
    distance = class_distance(champion.class_counts, challenger.class_counts)
    checks.append(_check("class mix", 0.0, distance, distance if _known(distance) else None,
                         tolerances.class_distance, f"Jensen-Shannon distance {distance:.3f}"))  # fmt: skip
    checks.append(_accuracy(champion, challenger, tolerances))

    phases = {c.phase for c in checks}
    phase = next((p for p in (Phase.FAILED, Phase.INCONCLUSIVE) if p in phases), Phase.SUCCESSFUL)
    return Comparison(phase, checks)


def _accuracy(champion: VersionWindow, challenger: VersionWindow, tolerances: Tolerances) -> Check:
    short = [w for w in (champion, challenger) if w.labelled < tolerances.min_labels]
    if short:
        named = ", ".join(f"version {w.version} has {w.labelled}" for w in short)
        return Check("accuracy", None, champion.accuracy, challenger.accuracy,
                     f"accuracy: not compared, {named} of {tolerances.min_labels} labels needed")  # fmt: skip
    a, b = champion.accuracy, challenger.accuracy
    return _check("accuracy", a, b, a - b, tolerances.accuracy_drop,
                  f"{b:.3f} on {challenger.labelled} labels vs {a:.3f} on {champion.labelled}")  # fmt: skip


def _ms(seconds: float | None) -> str:
    return f"{1000 * seconds:.1f} ms" if _known(seconds) else "no data"  # type: ignore[operator]


def _f(value: float | None) -> str:
    return f"{value:.3f}" if _known(value) else "no data"  # type: ignore[arg-type]


@dataclass
class StepAnalysis:
    """One rollout step's measurements, fed one at a time (by the deferred trigger, or a blocking loop)."""

    weight: float
    analysis: Analysis
    comparisons: list[Comparison] = field(default_factory=list)

    def observe(self, comparison: Comparison) -> Phase | None:
        """Record a measurement; the step's verdict when this one ends it early (failure limit exceeded)."""
        self.comparisons.append(comparison)
        failed = sum(c.phase is Phase.FAILED for c in self.comparisons)
        return Phase.FAILED if failed > self.analysis.failure_limit else None

    def conclude(self) -> Phase:
        """The verdict once ``count`` measurements are in without an early failure."""
        if any(c.phase is Phase.INCONCLUSIVE for c in self.comparisons):
            return Phase.INCONCLUSIVE
        return Phase.SUCCESSFUL

    @property
    def done(self) -> bool:
        return len(self.comparisons) >= self.analysis.count

    def to_dict(self, phase: Phase) -> dict:
        failed = [c for c in self.comparisons if c.phase is Phase.FAILED]
        inconclusive = [c for c in self.comparisons if c.phase is Phase.INCONCLUSIVE]
        reason = {
            Phase.FAILED: f"{len(failed)} of {len(self.comparisons)} measurements failed (failure limit "
            f"{self.analysis.failure_limit}): {failed[-1].reason if failed else ''}",
            Phase.INCONCLUSIVE: f"{len(inconclusive)} measurement(s) without data: "
            f"{inconclusive[-1].reason if inconclusive else ''}; a human must decide",
            Phase.SUCCESSFUL: f"challenger within every tolerance in {len(self.comparisons)} measurements",
        }[phase]
        return {"weight": self.weight, "phase": phase.value, "reason": reason,
                "measurements": [c.to_dict() for c in self.comparisons]}  # fmt: skip
