"""The check every step that acts on a human approval makes first: read the answer Airflow recorded.

See :mod:`pitcrew.approvals` for why a task state is not enough. The answer is read through Airflow's REST
API (:class:`~operators.airflow_api_hook.AirflowApiHook`), because a task may only read its own
human-in-the-loop record through the execution API, and XComs can be written by hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

from operators.airflow_api_hook import AirflowApiHook
from pitcrew.approvals import ApprovalNotGiven, check_approval

if TYPE_CHECKING:
    from airflow.sdk import Context

    from pitcrew.models_file import ModelEntry


def verified_approver(
    context: Context, entry: ModelEntry, *, approval_task_id: str, airflow_api_conn_id: str, acting: str
) -> str:
    """The user who approved this run's ``approval_task_id`` (a name in ``entry.approvers`` when set).

    :param acting: what the caller was about to do, for the failure message.
    :raises AirflowFailException: no valid approval; the message names why and that nothing was done.
    """
    ti = context["ti"]
    detail = AirflowApiHook(airflow_api_conn_id).hitl_detail(ti.dag_id, ti.run_id, approval_task_id)
    try:
        return check_approval(detail, approve=ApprovalOperator.APPROVE, approvers=entry.approvers).user
    except ApprovalNotGiven as exc:
        raise AirflowFailException(f"refusing to {acting}: task {approval_task_id!r}: {exc}") from exc
