"""Human gates, on Airflow's own human-in-the-loop operators: deploy a version, roll back, judge a canary.

Each subclass writes the request a person needs (what changes, with the evidence) when the task runs,
then parks the task until someone answers in the Airflow UI or over the REST API (``assigned_users``
restricts who may). No answer before ``response_timeout`` is the safe default: reject, roll back.
docs/design.md, "Approvals", has the rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from operators.base import FACTS_KEY, OUTCOME_KEY, OUTCOME_REASON_KEY, as_bool
from operators.mlflow_hook import MlflowHook
from operators.registry_operators import as_mapping
from operators.triton_hook import TritonHook

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of the time a request was put to people (the approval wait is measured from it).
REQUESTED_AT_KEY = "requested_at"


def artifact_url(tracking_uri: str, run_id: str, path: str) -> str:
    """An artifact of an MLflow run as the tracking server serves it (``GET /get-artifact``)."""
    from urllib.parse import urlencode

    return f"{tracking_uri}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"


def _answered_by(event: dict[str, Any]) -> str | None:
    user = event.get("responded_by_user") or {}
    return user.get("name") or user.get("id") or None


def _pending(model: str, context: Context, timeout: dt.timedelta | None) -> None:
    """Export that this run's approval waits (``PitcrewApprovalPendingLong`` fires past half its timeout)."""
    from pitcrew import pipeline_metrics
    from pitcrew.settings import get_settings

    if timeout:
        pipeline_metrics.approval_waiting(
            get_settings().home_dir / "metrics", model, context["run_id"], timeout.total_seconds()
        )


def _answered(model: str, context: Context) -> None:
    from pitcrew import pipeline_metrics
    from pitcrew.settings import get_settings

    pipeline_metrics.approval_answered(get_settings().home_dir / "metrics", model, context["run_id"])


def _notify_timeout(task: Any, context: Context, event: dict[str, Any]) -> None:
    """Tell the notifiers that nobody answered in time (they were told when the request started waiting)."""
    if not event.get("timedout"):
        return
    for notifier in getattr(task, "notifiers", ()):
        timed_out = getattr(notifier, "timed_out", None)
        if timed_out is not None:
            timed_out(context)


def _rollout_plan(model: str):
    """The model's rollout plan, read when the task runs (what Approve will do)."""
    from pitcrew.models_file import load_models_file
    from pitcrew.settings import get_settings

    return load_models_file(get_settings().models_file).get(model).rollout


def airflow_link(context: Context) -> str:
    """The run's page in the Airflow UI, from Airflow's own ``[api] base_url`` (what users' browsers reach)."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="").rstrip("/")
    return f"{base}/dags/{context['dag'].dag_id}/runs/{context['run_id']}"


class DeploymentApprovalOperator(ApprovalOperator):
    """Ask a human whether to hot-swap the registered challenger into Triton.

    The request shows the metric differences against the champion, the replay of logged traffic, the
    drift summary and links. Approve: the downstream swap runs. Reject, or no answer in time: downstream
    is skipped and the run's outcome is ``rejected_by_human``. With ``dry_run`` nobody is asked: the
    task is skipped and the outcome is ``dry_run``.

    :param model: the model in the models file (templated).
    :param version: the registered challenger (templated).
    :param parent_version: the champion it would replace (templated).
    :param evaluation: the evaluation verdict (templated).
    :param replay: the replay comparison (templated).
    :param drift: the drift summary, or None (templated).
    :param shadow: what the live shadow saw (:class:`~operators.shadow_operator.ShadowTrafficOperator`), or
        None (templated).
    :param dry_run: skip the approval and everything after it (templated).
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook`, for the version link.
    """

    template_fields: Sequence[str] = (
        *ApprovalOperator.template_fields, "model", "version", "parent_version", "evaluation", "replay",
        "drift", "shadow", "dry_run",
    )  # fmt: skip

    def __init__(
        self,
        *,
        model: str,
        version: Any,
        parent_version: Any = None,
        evaluation: Any = None,
        replay: Any = None,
        drift: Any = None,
        shadow: Any = None,
        dry_run: bool | str = False,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", f"Deploy a new version of {model}?")
        kwargs.setdefault("defaults", [self.REJECT])  # no answer in time is a rejection
        super().__init__(**kwargs)
        self.model, self.version, self.parent_version = model, version, parent_version
        self.evaluation, self.replay, self.drift, self.dry_run = evaluation, replay, drift, dry_run
        self.shadow, self.mlflow_conn_id = shadow, mlflow_conn_id

    def execute(self, context: Context) -> Any:
        from pitcrew import registry
        from pitcrew.pipeline.release_steps import approval_body, why_this_run

        if as_bool(self.dry_run, "dry_run"):
            context["ti"].xcom_push(key=OUTCOME_KEY, value="dry_run")
            raise AirflowSkipException("dry run: no approval asked, nothing deployed")
        version = int(self.version)
        mlflow = MlflowHook(self.mlflow_conn_id)
        client = mlflow.get_conn()
        links = {
            "MLflow version": f"{mlflow.tracking_uri}/#/models/{self.model}/versions/{version}",
            "Airflow run": airflow_link(context),
        }
        # Reports are artifacts of the version's MLflow run, served by the tracking server: a link any
        # approver's browser can open (a path on the worker could not be).
        run_id = registry.get_version(client, self.model, version).run_id
        drift = as_mapping(self.drift, "drift")
        if drift and drift.get("report_html"):
            links["drift report"] = artifact_url(mlflow.tracking_uri, run_id, f"{registry.REPORTS_PATH}/drift.html")
        replay = as_mapping(self.replay, "replay") or {}
        if replay.get("rows"):  # the replay ran after register: its details join the version's run now
            client.log_dict(run_id, replay, f"{registry.REPORTS_PATH}/replay.json")
            links["replay details"] = artifact_url(mlflow.tracking_uri, run_id, f"{registry.REPORTS_PATH}/replay.json")
        dag_run = context.get("dag_run")
        champion = None if self.parent_version in (None, "", "None") else int(self.parent_version)
        self.body = approval_body(
            model=self.model, version=version, champion=champion,
            evaluation=as_mapping(self.evaluation, "evaluation") or {}, replay=replay, drift=drift, links=links,
            why=why_this_run(dict(context.get("params") or {}), run_type=str(getattr(dag_run, "run_type", "") or ""),
                             triggered_by=getattr(dag_run, "triggering_user_name", None)),
            history=registry.recent_history(client, self.model, before=version),
            shadow=as_mapping(self.shadow, "shadow"), plan=_rollout_plan(self.model).describe(champion),
        )  # fmt: skip
        context["ti"].xcom_push(key=REQUESTED_AT_KEY, value=dt.datetime.now(dt.UTC).isoformat())
        _pending(self.model, context, self.response_timeout)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        ti = context["ti"]
        if "error" not in event:
            asked = ti.xcom_pull(task_ids=self.task_id, key=REQUESTED_AT_KEY)
            answered = event.get("responded_at")
            if asked and answered:
                answered = (
                    answered
                    if isinstance(answered, dt.datetime)
                    else dt.datetime.fromisoformat(str(answered))
                )
                waited = (answered - dt.datetime.fromisoformat(asked)).total_seconds()
                ti.xcom_push(key=FACTS_KEY, value={"approval_wait_s": waited})
            if self.APPROVE not in (event.get("chosen_options") or []):
                self._record_rejection(context, event)
            _notify_timeout(self, context, event)
        _answered(self.model, context)
        return super().execute_complete(context, event)

    def _record_rejection(self, context: Context, event: dict[str, Any]) -> None:
        """The run's outcome, and on the MLflow version who rejected it, when and why (a timeout too)."""
        from pitcrew import registry

        context["ti"].xcom_push(key=OUTCOME_KEY, value="rejected_by_human")
        who = _answered_by(event)
        why = (
            f"rejected by {who}" if who and not event.get("timedout")
            else f"no answer within {self.response_timeout}: rejected by default"
        )  # fmt: skip
        context["ti"].xcom_push(key=OUTCOME_REASON_KEY, value=why)
        try:
            client = MlflowHook(self.mlflow_conn_id).get_conn()
            registry.set_version_tags(client, self.model, int(self.version), {
                "rejected_by": who or "timeout", "rejected_at": str(event.get("responded_at") or ""),
                "rejection_reason": why, "airflow_dag_run_id": context["run_id"],
            })  # fmt: skip
        except Exception as exc:  # the decision stands and is in the run; a missing tag must not undo it
            self.log.warning("could not tag %s version %s as rejected: %s", self.model, self.version, exc)


class RollbackApprovalOperator(ApprovalOperator):
    """Show what a rollback would restore, and ask a human to approve it.

    The request names the MLflow ``previous`` version next to what Triton serves now. The version it
    offers is pushed to XCom as ``previous``, so the restore step restores exactly what was approved.

    :param model: the model in the models file (templated).
    :param triton_conn_id: connection of :class:`~operators.triton_hook.TritonHook`.
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook`.
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "model")

    def __init__(
        self,
        *,
        model: str,
        triton_conn_id: str = TritonHook.default_conn_name,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", f"Roll {model} back to the previous champion?")
        kwargs.setdefault("defaults", [self.REJECT])
        super().__init__(**kwargs)
        self.model, self.triton_conn_id, self.mlflow_conn_id = model, triton_conn_id, mlflow_conn_id

    def execute(self, context: Context) -> Any:
        from pitcrew import registry

        client = MlflowHook(self.mlflow_conn_id).get_conn()
        champion = registry.alias_version(client, self.model, registry.CHAMPION)
        previous = registry.alias_version(client, self.model, registry.PREVIOUS)
        if previous is None:
            raise AirflowFailException(
                f"{self.model} has no '{registry.PREVIOUS}' version in MLflow: nothing to roll back to"
            )
        serving = TritonHook(self.triton_conn_id).serving_version(self.model)
        tags = registry.get_version(client, self.model, previous).tags
        self.body = "\n".join(
            [
                f"### Roll `{self.model}` back to version {previous}",
                "",
                f"- Triton serves version **{serving}** now; MLflow champion is **{champion}**.",
                f"- Version {previous} was promoted at {tags.get('promoted_at', 'n/a')} (approved by "
                f"{tags.get('approver') or 'n/a'}); its files are still in the model repository.",
                f"- After approval Triton serves {previous} (loaded beside {serving}, no failed requests), "
                f"MLflow `champion` → {previous} and `previous` → {champion}.",
                "",
                f"[run]({airflow_link(context)})",
            ]
        )
        context["ti"].xcom_push(key="previous", value=previous)
        _pending(self.model, context, self.response_timeout)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        _answered(self.model, context)
        if "error" not in event:
            _notify_timeout(self, context, event)
        return super().execute_complete(context, event)


class CanaryDecisionOperator(HITLBranchOperator):
    """Promote or roll back after the canary; ask a human only when the canary was inconclusive.

    A successful canary branches to ``promote_task_id`` and a failed one to ``rollback_task_id`` at once.
    An inconclusive one (no data, NaN: never a pass) asks whether to keep the new version; no answer in
    time rolls back.

    The request shows each measurement against its bound, with a Prometheus graph link per query; the
    decision (who, when, keep or roll back, a timeout too) is tagged on the MLflow version when ``model``
    and ``version`` are given.

    :param canary_task_id: the :class:`~operators.canary_operators.CanaryAnalysisOperator` task.
    :param promote_task_id: the task that promotes the new version.
    :param rollback_task_id: the task that rolls it back.
    :param model: the model (templated), for the request and the MLflow tags.
    :param version: the version under review (templated).
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook`.
    """

    KEEP, ROLL_BACK = "Keep new version", "Roll back"
    template_fields: Sequence[str] = (*HITLBranchOperator.template_fields, "model", "version")

    def __init__(
        self,
        *,
        canary_task_id: str = "canary",
        promote_task_id: str = "promote",
        rollback_task_id: str = "rollback",
        model: str | None = None,
        version: Any = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", "The canary was inconclusive: keep the new version?")
        kwargs.setdefault("options", [self.KEEP, self.ROLL_BACK])
        kwargs.setdefault("options_mapping", {self.KEEP: promote_task_id, self.ROLL_BACK: rollback_task_id})
        kwargs.setdefault("defaults", [self.ROLL_BACK])  # no answer in time: roll back
        super().__init__(**kwargs)
        self.canary_task_id = canary_task_id
        self.promote_task_id, self.rollback_task_id = promote_task_id, rollback_task_id
        self.model, self.version, self.mlflow_conn_id = model, version, mlflow_conn_id

    def execute(self, context: Context) -> Any:
        verdict = context["ti"].xcom_pull(task_ids=self.canary_task_id) or {}
        phase = verdict.get("phase")
        if phase in ("successful", "failed"):
            target = self.promote_task_id if phase == "successful" else self.rollback_task_id
            self.log.info("canary %s (%s): no human needed", phase, verdict.get("reason"))
            return self.do_branch(context, target)
        self.body = canary_review_body(verdict, model=self.model, version=self.version)
        if self.model:
            _pending(self.model, context, self.response_timeout)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if self.model:
            _answered(self.model, context)
        if "error" not in event:
            _notify_timeout(self, context, event)
            self._record_decision(context, event)
        return super().execute_complete(context, event)

    def _record_decision(self, context: Context, event: dict[str, Any]) -> None:
        from pitcrew import registry

        if not self.model or self.version in (None, "", "None"):
            return
        who = _answered_by(event) or "timeout"
        try:
            registry.set_version_tags(MlflowHook(self.mlflow_conn_id).get_conn(), self.model, int(self.version), {
                "canary_review": ", ".join(event.get("chosen_options") or []), "canary_review_by": who,
                "canary_review_at": str(event.get("responded_at") or ""), "airflow_dag_run_id": context["run_id"],
            })  # fmt: skip
        except Exception as exc:  # the decision stands and is in the run; a missing tag must not undo it
            self.log.warning("could not tag the canary review on %s v%s: %s", self.model, self.version, exc)


def _value(value: Any) -> str:
    if value is None:
        return "no data"
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def canary_review_body(verdict: dict[str, Any], *, model: str | None = None, version: Any = None) -> str:
    """The Markdown of an inconclusive canary: every measurement against its bound, and graph links."""
    from urllib.parse import urlencode

    phase = verdict.get("phase") or "no verdict"
    what = f" of `{model}` version {version}" if model and version not in (None, "", "None") else ""
    bounds = {m["name"]: m for m in verdict.get("metrics", [])}

    def bound(name: str) -> str:
        m = bounds.get(name) or {}
        if m.get("max_value") is not None:
            return f"≤ {m['max_value']:g}"
        return f"≥ {m['min_value']:g}" if m.get("min_value") is not None else "n/a"

    lines = [f"### Canary{what}: {phase}", "", str(verdict.get("reason", "the canary task left no verdict")), ""]
    measurements = verdict.get("measurements", [])
    if measurements:
        lines += ["| metric | bound | measured | phase |", "| --- | --- | --- | --- |"]
        for m in measurements:
            values = m["values"] if isinstance(m["values"], list) else [m["values"]]
            measured = ", ".join(_value(v) for v in values) or "no data"
            lines.append(f"| {m['metric']} | {bound(m['metric'])} | {measured} | {m['phase']} |")
        lines.append("")
    for number, step in enumerate(verdict.get("steps", []), start=1):
        lines += [f"**Step {number}, weight {step['weight']:g}%: {step['phase']}.** {step['reason']}", ""]
        last = (step.get("measurements") or [{}])[-1]
        if last.get("checks"):
            lines += ["| check | champion | challenger | phase |", "| --- | --- | --- | --- |"]
            lines += [f"| {c['name']} | {_value(c['champion'])} | {_value(c['challenger'])} | {c['phase']} |"
                      for c in last["checks"]]  # fmt: skip
            lines.append("")
    prometheus = verdict.get("prometheus_url")
    if prometheus and bounds:
        lines.append("**Graphs:** " + " · ".join(
            f"[{name}]({prometheus}/graph?{urlencode({'g0.expr': m['query'], 'g0.tab': 0, 'g0.range_input': '1h'})})"
            for name, m in bounds.items()
        ))  # fmt: skip
        lines.append("")
    lines.append("Keep serving the new version, or roll back to the previous one? No answer: roll back.")
    return "\n".join(lines)
