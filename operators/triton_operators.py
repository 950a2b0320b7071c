"""Triton operators: hot-swap a version in, roll a rejected one back, restore the previous champion.

All three run the one swap protocol of :mod:`pitcrew.serving.swap` through :class:`TritonHook` (publish,
verify under a staging name no client calls, commit or restore; docs/design.md, "Hot-swap"). They default to
the ``pitcrew_triton_swaps`` pool: one Triton load call at a time across every DAG.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operators.airflow_api_hook import AirflowApiHook
from operators.approval_gate import verified_approver
from operators.base import PitcrewOperator
from operators.errors import retry_only_transient
from operators.mlflow_hook import MlflowHook
from operators.triton_hook import TritonHook

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The Airflow pool that serialises swaps (created by ``pitcrew stack up`` and compose's init).
SWAP_POOL = "pitcrew_triton_swaps"


def _json_safe(result: dict[str, Any]) -> dict[str, Any]:
    # numpy scalars (latency figures) stay numbers; anything else unknown (paths) becomes text.
    return json.loads(json.dumps(result, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _record_rollback(model: str) -> None:
    """Count a rollback when it happens (``pitcrew_rollbacks_total``), whichever DAG did it."""
    from pitcrew import pipeline_metrics
    from pitcrew.settings import get_settings

    pipeline_metrics.record(get_settings().home_dir / "metrics", model, rollback=True)


class TritonHotSwapOperator(PitcrewOperator):
    """Serve ``version`` of the model in Triton with no failed request.

    Publishes ``artifact`` as that version (atomically; core and front for a pair runtime), checks its
    golden-set answers and latency under a staging name no client calls, then serves it; on any failure
    the old version keeps serving and the new one is removed. Returns the swap's record (versions, load
    and total seconds, verification, who approved).

    Before touching Triton it reads the answer Airflow recorded for ``approval_task_id``
    (:mod:`operators.approval_gate`): without an Approve by an allowed user (a task marked successful by
    hand, a responder not in ``approvers``) it fails with the reason and nothing is published.

    :param model: the model in the models file (templated).
    :param version: the version to serve, MLflow's version number (templated).
    :param artifact: the compiled serving folder to publish first, or None if already published (templated).
    :param approval_task_id: the approval this swap needs; None for a swap no human gates (not in pitcrew's DAGs).
    :param triton_conn_id: connection of :class:`~operators.triton_hook.TritonHook`.
    :param airflow_api_conn_id: connection of :class:`~operators.airflow_api_hook.AirflowApiHook`.
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "version", "artifact")

    def __init__(
        self,
        *,
        version: int | str,
        artifact: str | None = None,
        approval_task_id: str | None = "approval",
        triton_conn_id: str = TritonHook.default_conn_name,
        airflow_api_conn_id: str = AirflowApiHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", SWAP_POOL)
        super().__init__(**kwargs)
        self.version, self.artifact, self.triton_conn_id = version, artifact, triton_conn_id
        self.approval_task_id, self.airflow_api_conn_id = approval_task_id, airflow_api_conn_id

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        approver = None
        if self.approval_task_id is not None:
            approver = verified_approver(
                context, self.entry, approval_task_id=self.approval_task_id,
                airflow_api_conn_id=self.airflow_api_conn_id, acting=f"swap {self.model} to version {self.version}",
            )  # fmt: skip
        hook = TritonHook(self.triton_conn_id)
        artifact = Path(self.artifact) if self.artifact else None
        if self.entry.rollout.weighted:  # the canary task moves its weight step by step
            started = hook.start_rollout(self.model, int(self.version), artifact)
            return {**_json_safe(started), "version": int(self.version), "rollout": self.entry.rollout.mode,
                    "approver": approver}  # fmt: skip
        return {**_json_safe(hook.deploy(self.model, int(self.version), artifact)), "approver": approver}


class TritonRollbackOperator(PitcrewOperator):
    """Serve ``version`` again after a rejected canary, and mark the rejected version in MLflow.

    The rejected version stays in the model repository (evidence); the old one is verified staged, then
    served before the rejected one is dropped, so no request fails. Declares the run's outcome ``rolled_back``.

    :param model: the model in the models file (templated).
    :param version: the version to serve again, the champion the run started from (templated).
    :param rejected_version: the version being rolled back, tagged ``rolled_back`` in MLflow (templated).
    :param reason: why, recorded in the tag.
    :param triton_conn_id: connection of :class:`~operators.triton_hook.TritonHook`.
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook`.
    """

    template_fields: Sequence[str] = (
        *PitcrewOperator.template_fields,
        "version",
        "rejected_version",
        "reason",
    )

    def __init__(
        self,
        *,
        version: int | str,
        rejected_version: int | str,
        reason: str = "canary failed or was rejected",
        triton_conn_id: str = TritonHook.default_conn_name,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", SWAP_POOL)
        super().__init__(**kwargs)
        self.version, self.rejected_version, self.reason = version, rejected_version, reason
        self.triton_conn_id, self.mlflow_conn_id = triton_conn_id, mlflow_conn_id

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        from pitcrew import registry

        hook = TritonHook(self.triton_conn_id)
        under_way = hook.rollout_under_way(self.model) if self.entry.rollout.weighted else None
        if under_way is not None and under_way["challenger"] == int(self.rejected_version):
            # A weighted rollout: the champion never stopped serving; drop the challenger's share and it.
            hook.abort_rollout(self.model)
            result = {"version": under_way["champion"], "aborted_rollout_of": under_way["challenger"],
                      "weight_when_aborted": under_way["weight"]}  # fmt: skip
        else:
            result = hook.rollback(self.model, int(self.version))
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        registry.set_version_tags(
            client, self.model, int(self.rejected_version), {"rolled_back": self.reason}
        )
        _record_rollback(self.model)
        self.declare_outcome(context, "rolled_back")
        return _json_safe(result)


class RestorePreviousChampionOperator(PitcrewOperator):
    """Roll back by hand: serve the ``previous`` champion again and swap the MLflow aliases back.

    Triton first (the hot-swap protocol: no failed request), then MLflow: ``champion`` →
    the restored version, ``previous`` → the demoted one, and who approved it. Like the hot swap, it
    first checks the answer Airflow recorded for the approval and does nothing without a valid one.

    :param model: the model in the models file (templated).
    :param version: the version to restore, as shown to the approver (templated).
    :param approval_task_id: the approval task whose verified responder is recorded.
    :param triton_conn_id: connection of :class:`~operators.triton_hook.TritonHook`.
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook`.
    :param airflow_api_conn_id: connection of :class:`~operators.airflow_api_hook.AirflowApiHook`.
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "version")

    def __init__(
        self,
        *,
        version: int | str,
        approval_task_id: str = "approval",
        triton_conn_id: str = TritonHook.default_conn_name,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        airflow_api_conn_id: str = AirflowApiHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", SWAP_POOL)
        super().__init__(**kwargs)
        self.version, self.approval_task_id = version, approval_task_id
        self.triton_conn_id, self.mlflow_conn_id = triton_conn_id, mlflow_conn_id
        self.airflow_api_conn_id = airflow_api_conn_id

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        from pitcrew import registry

        approver = verified_approver(
            context, self.entry, approval_task_id=self.approval_task_id,
            airflow_api_conn_id=self.airflow_api_conn_id, acting=f"restore {self.model} version {self.version}",
        )  # fmt: skip
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        previous = registry.alias_version(client, self.model, registry.PREVIOUS)
        if previous != int(self.version):
            raise registry.RegistryError(
                f"{self.model}: MLflow 'previous' is now {previous}, not the approved version {self.version}; "
                "nothing changed (start a new rollback run to see the current state)"
            )
        swapped = TritonHook(self.triton_conn_id).rollback(self.model, previous)
        aliases = registry.restore_previous(client, self.model, approver=approver)
        _record_rollback(self.model)
        return {"serving": swapped["version"], "aliases": aliases, "approver": approver}
