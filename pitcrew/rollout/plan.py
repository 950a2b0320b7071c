"""A model's rollout plan (the ``rollout`` key of its models-file entry): how an approved challenger
reaches all traffic.

``mode: all_at_once`` is the hot-swap with a bake canary after it (docs/design.md, "Canary").
``mode: canary`` moves the challenger's share of traffic through ``steps`` as Argo Rollouts' ``setWeight``
and ``pause`` do, and at each step runs an analysis that compares the challenger with the champion over
the same window (``analysis``: Argo's ``interval``, ``count``, ``failureLimit``). ``mode: shadow`` first
sends every request to both versions and returns the champion's answer, for ``shadow.duration``, so that
the approval can show how often they agree on live traffic; after the approval the steps run as in
``canary``.

Durations are seconds, or a string of ``<n>h``, ``<n>m`` and ``<n>s`` parts (``"5m"``, ``"1h30m"``,
``"90s"``), as Argo writes them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a ``1h30m``-style string; ValueError names what was given."""
    if isinstance(value, bool):  # YAML's yes/no would otherwise pass as 1/0
        raise ValueError(f"a duration is seconds or a string like '5m', not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())) and value.strip():
        parts = match.groupdict(default="0")
        seconds = float(parts["h"]) * 3600 + float(parts["m"]) * 60 + float(parts["s"])
    else:
        raise ValueError(f"a duration is seconds or a string like '30s', '5m', '1h30m', not {value!r}")
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"a duration must be 0 or more seconds, not {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class RolloutStep(BaseModel):
    """Send ``weight`` percent of requests to the challenger, then wait ``pause`` while the analysis runs
    (a step's analysis lasts at least its ``interval`` × ``count``, whatever the pause)."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(gt=0, le=100, description="The challenger's share of requests, in percent.")
    pause: Duration = Field(0.0, description="How long the step holds before the next one.")


class Analysis(BaseModel):
    """Measurements at each step, with the semantics of Argo Rollouts' AnalysisRun."""

    model_config = ConfigDict(extra="forbid")

    initial_delay: Duration = Field(
        10.0, description="Wait after a weight change before the first measurement (the scrape must catch up)."
    )
    interval: Duration = Field(60.0, description="Time between measurements; each covers this window.")
    count: int = Field(3, ge=1, description="Measurements per step.")
    failure_limit: int = Field(0, ge=0, description="Failed measurements tolerated; one more fails the step.")

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the analysis interval must be more than 0 seconds: each measurement covers it")
        return value


class Tolerances(BaseModel):
    """How much worse than the champion the challenger may be, measured over the same window."""

    model_config = ConfigDict(extra="forbid")

    error_ratio: float = Field(
        0.005, ge=0, le=1, description="Failed-request ratio above the champion's, absolute (0.005: half a point)."
    )
    p99_latency_ratio: float = Field(1.25, ge=1, description="p99 latency at most this times the champion's.")
    confidence_drop: float = Field(
        0.05, ge=0, le=1, description="Mean top-class confidence at most this below the champion's."
    )
    class_distance: float = Field(
        0.15, gt=0, le=1,
        description="Jensen-Shannon distance (base 2) between the two predicted-class mixes at most this.",
    )  # fmt: skip
    accuracy_drop: float = Field(
        0.02, ge=0, le=1, description="Accuracy on feedback labels at most this below the champion's."
    )
    min_labels: int = Field(
        30, ge=1, description="Labelled requests each version needs before accuracy is compared."
    )
    min_requests: int = Field(
        20, ge=1, description="Requests each version needs in a window; fewer: the measurement is inconclusive."
    )


class Shadow(BaseModel):
    """The shadow phase of ``mode: shadow``, before the approval."""

    model_config = ConfigDict(extra="forbid")

    duration: Duration = Field(600.0, description="How long the challenger shadows live traffic.")
    min_requests: int = Field(
        100, ge=1, description="Shadowed requests the approval needs to show an agreement figure."
    )


def _default_steps() -> list[RolloutStep]:
    return [RolloutStep(weight=10, pause=300), RolloutStep(weight=50, pause=300), RolloutStep(weight=100)]


class Rollout(BaseModel):
    """The ``rollout`` key of a models-file entry."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["all_at_once", "canary", "shadow"] = Field(
        "all_at_once",
        description="all_at_once: swap, then a bake canary; canary: weighted steps compared with the "
        "champion; shadow: the challenger answers a copy of every request first, then the steps.",
    )
    steps: list[RolloutStep] = Field(default_factory=_default_steps, min_length=1)
    analysis: Analysis = Field(default_factory=Analysis)
    tolerances: Tolerances = Field(default_factory=Tolerances)
    shadow: Shadow = Field(default_factory=Shadow)

    @field_validator("steps")
    @classmethod
    def _rising_to_all(cls, steps: list[RolloutStep]) -> list[RolloutStep]:
        weights = [step.weight for step in steps]
        if any(later <= earlier for earlier, later in zip(weights, weights[1:], strict=False)):
            raise ValueError(f"step weights must rise from step to step; got {weights}")
        if weights[-1] != 100:
            raise ValueError(f"the last step must send all traffic (weight 100) to promote; got {weights[-1]:g}")
        return steps

    @property
    def weighted(self) -> bool:
        """Whether the challenger reaches traffic in steps (``canary`` and ``shadow``)."""
        return self.mode != "all_at_once"

    def describe(self, champion: int | None) -> str:
        """One sentence for the approval: what happens after Approve."""
        if not self.weighted:
            return "Approve to hot-swap into Triton (canary watch follows, automatic rollback on failure)."
        steps = " → ".join(f"{s.weight:g}%" + (f" ({_duration(s.pause)})" if s.pause else "") for s in self.steps)
        a, t = self.analysis, self.tolerances
        back = f"version {champion}" if champion is not None else "the champion"
        return (
            f"Approve to roll out in steps: {steps}. At each step {a.count} measurement(s) {_duration(a.interval)} "
            f"apart compare it with {back} over the same window (error ratio +{100 * t.error_ratio:g} points, "
            f"p99 ×{t.p99_latency_ratio:g}, confidence −{t.confidence_drop:g}, class mix distance "
            f"{t.class_distance:g}, accuracy −{t.accuracy_drop:g} at most); {a.failure_limit + 1} failed "
            f"measurement(s) send every request back to {back} and unload the challenger."
        )


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
