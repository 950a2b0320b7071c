"""How a maintenance or nightly run ended, from what its steps declared and the states they ended in.

Every step that ends a run on purpose declares why (docs/design.md, "Run outcomes"): the drift check
that finds no drift, the evaluation that rejects the challenger, the nightly's data step with nothing to
learn, the approval (rejected by a human, or a dry run that asks nobody), promotion and rollback. A
failed task anywhere wins over every declaration; a run in which nothing failed and nothing declared an
outcome also counts as failed, because no step can say what it achieved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Outcomes in the order a run can reach them; ``pitcrew_pipeline_runs_total`` has one series each.
OUTCOMES = (
    "deployed",
    "no_drift",
    "nothing_to_do",
    "rejected_by_evaluation",
    "rejected_by_human",
    "rolled_back",
    "failed",
    "dry_run",
)
#: Outcomes that end the run green: the pipeline did what it should, including deciding to do nothing.
SUCCESSFUL = frozenset({"deployed", "no_drift", "nothing_to_do", "rejected_by_evaluation",
                        "rejected_by_human", "dry_run"})  # fmt: skip
FAILED_STATES = frozenset({"failed", "upstream_failed"})


@dataclass(frozen=True)
class RunOutcome:
    outcome: str
    reason: str

    @property
    def successful(self) -> bool:
        return self.outcome in SUCCESSFUL


def decide_outcome(
    states: Mapping[str, Any], declared: Iterable[str | None], reasons: Iterable[str | None] = ()
) -> RunOutcome:
    """The run's outcome from its task states (``{task_id: state}``) and the outcomes its steps declared,
    with the reason the declaring step gave (``reasons``, if any: the last one).

    :raises ValueError: a declared outcome that is not one of :data:`OUTCOMES` (a bug in a step).
    """
    failed = sorted(task for task, state in states.items() if str(state) in FAILED_STATES)
    if failed:
        return RunOutcome("failed", f"task(s) failed: {', '.join(failed)}")
    outcomes = [o for o in declared if o]
    unknown = sorted(set(outcomes) - set(OUTCOMES))
    if unknown:
        raise ValueError(f"unknown run outcome(s) {unknown}; expected one of {', '.join(OUTCOMES)}")
    if not outcomes:
        return RunOutcome("failed", "no step declared an outcome (nothing failed, nothing finished)")
    if len(set(outcomes)) > 1:
        # Two ends in one run (say a rollback after a promotion): report the last step's, loudly.
        return RunOutcome(outcomes[-1], f"several outcomes declared: {outcomes}; the last one counts")
    given = [r for r in reasons or () if r]
    return RunOutcome(outcomes[0], given[-1] if given else "declared by the step that ended the run")


def merge_facts(facts: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Fold the facts steps report for the pipeline metrics (training seconds, approval wait, ...)."""
    merged: dict[str, Any] = {}
    for item in facts:
        merged.update({k: v for k, v in (item or {}).items() if v is not None})
    return merged
