"""The approval check the swap, the restore and promote make on Airflow's recorded answer."""

from __future__ import annotations

import pytest

from pitcrew.approvals import ApprovalNotGiven, check_approval

ANN = {"id": "ann", "name": "ann"}


def _answer(**changes: object) -> dict:
    return {"response_received": True, "chosen_options": ["Approve"], "responded_by_user": ANN,
            "responded_at": "2026-12-05T10:00:00Z", **changes}  # fmt: skip


def test_an_approve_by_a_listed_approver_passes() -> None:
    approval = check_approval(_answer(), approve="Approve", approvers=["ann", "bob"])
    assert (approval.user, approval.responded_at) == ("ann", "2026-12-05T10:00:00Z")


def test_without_approvers_any_user_airflow_let_answer_passes() -> None:
    assert check_approval(_answer(responded_by_user={"id": "u7", "name": "zed"}), approve="Approve", approvers=[]).user == "zed"


def test_a_user_listed_by_id_passes() -> None:
    user = {"id": "u-17", "name": "Ann Example"}
    assert check_approval(_answer(responded_by_user=user), approve="Approve", approvers=["u-17"]).user == "Ann Example"


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        (None, "never asked anyone"),
        (_answer(response_received=False, chosen_options=None, responded_by_user=None), "marked successful by hand"),
        (_answer(chosen_options=["Reject"]), r"answered \['Reject'\] by ann, not 'Approve'"),
        (_answer(chosen_options=["Reject"], responded_by_user=None), "no answer in time"),
        (_answer(responded_by_user=None), "names no user"),
        (_answer(responded_by_user={"id": "eve", "name": "eve"}), r"eve answered .* not one of the model's approvers \(ann\)"),
    ],
)  # fmt: skip
def test_everything_else_is_refused_with_its_reason(detail: dict | None, reason: str) -> None:
    with pytest.raises(ApprovalNotGiven, match=reason):
        check_approval(detail, approve="Approve", approvers=["ann"])
