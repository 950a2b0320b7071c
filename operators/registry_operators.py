"""MLflow registry operators: register the challenger with its lineage, promote it once it has proven itself.

The registry contract (aliases ``champion``, ``challenger``, ``previous``; lineage tags) is in
:mod:`pitcrew.registry` and docs/design.md, "Registry". The ``champion`` alias moves only after Triton
serves the new version and its canary passed, so the registry never names a champion Triton does not serve.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operators.base import PitcrewOperator
from operators.errors import retry_only_transient
from operators.mlflow_hook import MlflowHook

if TYPE_CHECKING:
    from airflow.sdk import Context


def as_mapping(value: Any, name: str) -> dict[str, Any] | None:
    """A templated dict: a mapping, None, or the text Jinja renders one as (without native rendering)."""
    if value is None or isinstance(value, Mapping):
        return dict(value) if value is not None else None
    text = str(value).strip()
    if text in ("", "None", "null"):
        return None
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"{name} must be a mapping, got {text[:80]!r}") from exc
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a mapping, got {type(parsed).__name__}")
    return parsed


class RegisterModelVersionOperator(PitcrewOperator):
    """Register the compiled challenger in MLflow as a new version with alias ``challenger``.

    The version's run holds the serving artifact, the checkpoint the next fine-tune starts from, the
    reports and the training rows (the next drift reference). Lineage tags: DAG run, trigger and alert,
    data window, drift summary, parent version, metrics against the champion, compile target. Returns
    ``version`` (also Triton's version number) and ``parent_version``.

    :param model: the model in the models file (templated).
    :param checkpoint: the fine-tuned checkpoint folder (templated).
    :param artifact: the compiled serving folder (templated).
    :param compile_report: the compile step's report (templated).
    :param evaluation: the evaluation verdict (templated).
    :param window: the traffic window read by the data step (templated).
    :param drift: the drift summary, or None when the run had no drift check (templated).
    :param parent_version: the champion the challenger was fine-tuned from (templated).
    :param trigger: what started the run: alert, watch, schedule or manual (templated).
    :param alert: the alert that started it (``name``, ``fingerprint``, ``starts_at``), if any (templated).
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook`.
    :param triton_conn_id: connection of :class:`~operators.triton_hook.TritonHook`: before anything is
        registered (and long before approval), the artifact must be servable by that Triton (runtime,
        TensorRT version of a plan).
    """

    template_fields: Sequence[str] = (
        *PitcrewOperator.template_fields, "checkpoint", "artifact", "compile_report", "evaluation", "window",
        "drift", "parent_version", "trigger", "alert",
    )  # fmt: skip

    def __init__(
        self,
        *,
        checkpoint: str,
        artifact: str,
        compile_report: Any,
        evaluation: Any,
        window: Any,
        drift: Any = None,
        parent_version: int | str | None = None,
        trigger: str = "manual",
        alert: Any = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        triton_conn_id: str = "triton_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.checkpoint, self.artifact = checkpoint, artifact
        self.triton_conn_id = triton_conn_id
        self.compile_report, self.evaluation, self.window, self.drift = (
            compile_report,
            evaluation,
            window,
            drift,
        )
        self.parent_version, self.trigger, self.alert = parent_version, trigger, alert
        self.mlflow_conn_id = mlflow_conn_id

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        from operators.triton_hook import TritonHook
        from pitcrew.pipeline import release_steps

        TritonHook(self.triton_conn_id).check_servable(self.model, self.artifact)
        evaluation = as_mapping(self.evaluation, "evaluation") or {}
        parent = None if self.parent_version in (None, "", "None") else int(self.parent_version)
        tags = release_steps.lineage_tags(
            dag_run_id=context["run_id"], trigger=str(self.trigger), alert=as_mapping(self.alert, "alert"),
            window=as_mapping(self.window, "window") or {}, drift=as_mapping(self.drift, "drift"),
            parent_version=parent, evaluation=evaluation,
            compile_report=as_mapping(self.compile_report, "compile_report") or {},
        )  # fmt: skip
        metrics = {
            f"eval_{k}": v
            for k, v in ((evaluation.get("challenger") or {}).get("eval") or {}).items()
            if isinstance(v, int | float)
        }
        version = release_steps.register(
            MlflowHook(self.mlflow_conn_id).get_conn(), self.entry, self.run_workspace(context),
            artifact=Path(self.artifact), checkpoint=Path(self.checkpoint), tags=tags, metrics=metrics,
        )  # fmt: skip
        return {"version": version, "parent_version": parent}


class PromoteChampionOperator(PitcrewOperator):
    """Make ``version`` the champion (the old one becomes ``previous``) and record who approved it.

    With a weighted rollout (the model's ``rollout.mode`` is not ``all_at_once``) Triton comes first: the
    challenger, at weight 100 after its last step, becomes the model clients call (the hot-swap's commit),
    and the champion is dropped. Declares the run's outcome ``deployed``; when an alert started the run,
    reports the time from the alert's start to now (``pitcrew_alert_to_deploy_seconds``).

    :param model: the model in the models file (templated).
    :param version: the version that serves and passed its canary (templated).
    :param approval_task_id: the approval task whose verified responder is recorded as the approver (a
        promotion with no valid approval on record fails: see :mod:`operators.approval_gate`).
    :param alert: the alert that started the run, if any (templated).
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook`.
    :param airflow_api_conn_id: connection of :class:`~operators.airflow_api_hook.AirflowApiHook`.
    :param triton_conn_id: connection of :class:`~operators.triton_hook.TritonHook` (weighted rollouts).
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "version", "alert")

    def __init__(
        self,
        *,
        version: int | str,
        approval_task_id: str = "approval",
        alert: Any = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        airflow_api_conn_id: str = "pitcrew_airflow_api",
        triton_conn_id: str = "triton_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.version, self.approval_task_id, self.alert = version, approval_task_id, alert
        self.mlflow_conn_id, self.airflow_api_conn_id = mlflow_conn_id, airflow_api_conn_id
        self.triton_conn_id = triton_conn_id

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        from operators.approval_gate import verified_approver
        from pitcrew.pipeline.release_steps import promote

        alert = as_mapping(self.alert, "alert") or {}  # a bad argument fails before anything moves
        approver = verified_approver(
            context, self.entry, approval_task_id=self.approval_task_id,
            airflow_api_conn_id=self.airflow_api_conn_id, acting=f"promote {self.model} version {self.version}",
        )  # fmt: skip
        serving = None
        if self.entry.rollout.weighted:  # Triton first: the challenger becomes the model itself
            from operators.triton_hook import TritonHook

            hook = TritonHook(self.triton_conn_id)
            if hook.rollout_under_way(self.model) is not None:
                serving = hook.promote_rollout(self.model)
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        result = promote(client, self.entry, version=int(self.version), approver=approver)
        if serving is not None:
            result = {**result, "serving": json.loads(json.dumps(serving, default=str))}
        self.declare_outcome(context, "deployed")
        # A fact for the metrics: a start time it cannot read must not fail a promotion that happened.
        since = self._alert_start(alert.get("starts_at"))
        if since is not None:
            self.report_facts(context, alert_to_deploy_s=(dt.datetime.now(dt.UTC) - since).total_seconds())
        return {**result, "approver": approver}

    def _alert_start(self, started: Any) -> dt.datetime | None:
        """The alert's start as an aware datetime (UTC when it names no zone); None when absent or unreadable."""
        if not started:
            return None
        try:
            since = dt.datetime.fromisoformat(str(started).replace("Z", "+00:00"))
        except ValueError:
            self.log.warning("alert starts_at %r is not an ISO timestamp: no alert-to-deploy time", started)
            return None
        return since if since.tzinfo is not None else since.replace(tzinfo=dt.UTC)
