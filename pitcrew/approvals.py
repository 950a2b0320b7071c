"""Whether a recorded human answer allows a swap: the check the swap, the restore and promote make themselves.

Airflow enforces ``assigned_users`` only on its human-in-the-loop response endpoint. Anyone who may edit
task instances can instead mark the approval task successful, and then nothing was answered at all. So
the steps that act on an approval read the answer Airflow recorded (its HITL detail, written only by that
endpoint or by the timeout sweep) and proceed only when it says: Approve, by a named user who is one of
the model's ``approvers`` when that list is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class ApprovalNotGiven(Exception):
    """No valid approval is recorded; the message says why (the step fails with it)."""


@dataclass(frozen=True)
class Approval:
    user: str
    responded_at: str


def check_approval(detail: Mapping[str, Any] | None, *, approve: str, approvers: Sequence[str]) -> Approval:
    """The approval in ``detail`` (Airflow's HITL detail as its REST API returns it), or why there is none.

    :param approve: the option that means yes (``ApprovalOperator.APPROVE``).
    :param approvers: the model's ``approvers``; empty: any user Airflow let answer.
    :raises ApprovalNotGiven: no request, no answer (the task was marked successful by hand), another
        option chosen, an answer with no user (a timeout), or a user not in ``approvers``.
    """
    if detail is None:
        raise ApprovalNotGiven(
            "no approval request exists for this run: the approval task never asked anyone "
            "(was it marked successful by hand?)"
        )
    if not detail.get("response_received") or not detail.get("chosen_options"):
        raise ApprovalNotGiven(
            "nobody answered the approval request: the approval task was marked successful by hand, "
            "which is not an approval"
        )
    chosen = list(detail["chosen_options"])
    user = detail.get("responded_by_user") or {}
    name = user.get("name") or user.get("id")
    if chosen != [approve]:
        who = f" by {name}" if name else " (no answer in time: the default)"
        raise ApprovalNotGiven(f"the approval was answered {chosen}{who}, not {approve!r}")
    if not name:
        raise ApprovalNotGiven("the approval names no user who answered it")
    allowed = {str(a) for a in approvers}
    if allowed and name not in allowed and str(user.get("id")) not in allowed:
        raise ApprovalNotGiven(
            f"{name} answered the approval but is not one of the model's approvers ({', '.join(sorted(allowed))})"
        )
    return Approval(user=str(name), responded_at=str(detail.get("responded_at") or ""))
