"""Build the per-model maintenance and nightly-retrain DAGs from a models-file entry.

Tasks are thin: they read settings, get clients from the Hooks and call :mod:`pitcrew.pipeline`.
Heavy imports (torch, transformers, mlflow) happen inside tasks, never at parse time.

Only transient failures are retried (Triton or MLflow unreachable); anything else — bad data, a parity
failure, a rejected artifact — fails the task at once with its reason (:func:`transient_only`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator
from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pitcrew.models_file import ModelEntry

log = logging.getLogger(__name__)

#: Airflow pool that serialises Triton swaps across all DAGs (one load call at a time; DESIGN.md §5).
SWAP_POOL = "pitcrew_triton_swaps"
APPROVE = ApprovalOperator.APPROVE
KEEP, ROLL_BACK = "Keep new version", "Roll back"


def maintenance_dag_id(model: str) -> str:
    return f"pitcrew_maintenance_{model}"


def nightly_dag_id(model: str) -> str:
    return f"pitcrew_nightly_retrain_{model}"


def rollback_dag_id(model: str) -> str:
    return f"pitcrew_rollback_{model}"


def _transient_errors() -> tuple[type[BaseException], ...]:
    import httpx
    import requests

    from pitcrew.serving.errors import TritonUnavailableError

    return (
        TritonUnavailableError,
        requests.ConnectionError,
        requests.Timeout,
        httpx.TransportError,
        ConnectionError,
    )


def transient_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Let transient errors through (Airflow retries them with backoff); fail everything else at once."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (AirflowFailException, AirflowSkipException):
            raise
        except _transient_errors():
            raise
        except Exception as exc:
            if _is_transient_mlflow(exc):
                raise
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def _is_transient_mlflow(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    # MLflow wraps connection failures and 5xx answers in MlflowException with these codes.
    return isinstance(exc, MlflowException) and exc.error_code in (
        "TEMPORARILY_UNAVAILABLE",
        "INTERNAL_ERROR",
    )


def _on_failure(context: dict) -> None:
    ti = context["task_instance"]
    log.error(
        "pitcrew task %s of %s failed in run %s: %s",
        ti.task_id, ti.dag_id, ti.run_id, context.get("exception"),
    )  # fmt: skip


def _default_args() -> dict:
    return {
        "owner": "pitcrew",
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=10),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=5),
        "on_failure_callback": _on_failure,
    }


# ------------------------------------------------------------------------------------------------
# Shared task bodies (plain functions; each DAG wraps them in @task with its own ids)
# ------------------------------------------------------------------------------------------------
def _settings():
    from pitcrew.settings import get_settings

    return get_settings()


def _entry(model: str) -> ModelEntry:
    from pitcrew.models_file import load_models_file

    return load_models_file(_settings().models_file).get(model)


def _workspace(model: str):
    from pitcrew.pipeline.workspace import Workspace

    context = get_current_context()
    return Workspace.for_run(_settings().home_dir, model, context["dag_run"].run_id)


def _mlflow():
    from operators.mlflow_hook import MlflowHook

    return MlflowHook().get_conn()


def _mlflow_url() -> str:
    from operators.mlflow_hook import MlflowHook

    return MlflowHook().tracking_uri


def validate_request(model: str) -> dict:
    """The run's request: conf checked against the DAG's model, params merged in."""
    context = get_current_context()
    conf = dict(context["dag_run"].conf or {})
    params = context["params"]
    requested = conf.get("model", params.get("model", model))
    if requested != model:
        raise AirflowFailException(f"this DAG maintains {model!r}; the run asked for model {requested!r}")
    _entry(model)  # the models file still declares it (a run outlives edits to the file)
    trigger = conf.get("trigger", "manual")
    if trigger not in ("alert", "schedule", "manual", "watch"):
        raise AirflowFailException(f"conf.trigger must be alert, schedule, watch or manual, got {trigger!r}")
    alert = conf.get("alert")
    if trigger == "alert":
        missing = [k for k in ("name", "fingerprint", "starts_at") if not (alert or {}).get(k)]
        if missing:
            raise AirflowFailException(f"conf.alert is missing required key(s): {', '.join(missing)}")
    return {
        "model": model,
        "trigger": trigger,
        "alert": alert,
        "force_retrain": bool(params.get("force_retrain", False)),
        "skip_drift": bool(params.get("skip_drift", False)),
        "dry_run": bool(params.get("dry_run", False)),
        "window_hours": float(params.get("window_hours") or _entry(model).thresholds.window_hours),
        "requested_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def read_window(model: str, request: dict) -> dict:
    from pitcrew.pipeline.data_steps import load_window

    return load_window(_entry(model), _workspace(model), hours=request["window_hours"])


def check_quality(model: str, window: dict) -> dict:
    from pitcrew.pipeline.data_steps import data_quality

    return data_quality(_entry(model), _workspace(model))


def _champion_reference(model: str) -> str | None:
    """The champion's training snapshot (what it learned from), or None to use the models file's train_data."""
    from pitcrew import registry

    client = _mlflow()
    version = registry.alias_version(client, model, registry.CHAMPION)
    if version is None:
        return None
    snapshot = registry.training_snapshot(client, model, version, _workspace(model).path("champion/data"))
    return str(snapshot) if snapshot is not None else None


def check_drift(model: str, request: dict, quality: dict) -> dict | None:
    from pitcrew.pipeline.data_steps import drift

    if request["skip_drift"]:
        return None
    return drift(
        _entry(model), _workspace(model), _settings().home_dir / "metrics", _champion_reference(model)
    )


def prepare_training(model: str, quality: dict, nightly: bool = False) -> dict:
    from pitcrew import registry
    from pitcrew.pipeline.data_steps import PipelineDataError, split_for_training
    from pitcrew.pipeline.release_steps import download_champion

    entry, ws = _entry(model), _workspace(model)
    if nightly and registry.alias_version(_mlflow(), model, registry.CHAMPION) is None:
        # A schedule that fires before the first champion exists has nothing to retrain; not a failure.
        raise AirflowSkipException(f"{model} has no champion yet (pitcrew bootstrap): nothing to retrain")
    try:
        split = split_for_training(entry, ws, reference=_champion_reference(model))
    except PipelineDataError as exc:
        if nightly:
            raise AirflowSkipException(f"nothing new to learn tonight: {exc}") from exc
        raise
    champion = download_champion(_mlflow(), entry, ws)
    return {**split, "champion": champion}


def fine_tune(model: str, prepared: dict) -> dict:
    from pitcrew.pipeline.model_steps import fine_tune as run_fine_tune

    return run_fine_tune(
        _entry(model),
        _workspace(model),
        base_model=prepared["champion"]["checkpoint"],
        mlflow_tracking_uri=_mlflow_url(),
    )


def evaluate(model: str, prepared: dict, trained: dict) -> dict:
    from pathlib import Path

    from pitcrew.pipeline.model_steps import evaluate as run_evaluate

    return run_evaluate(
        _entry(model), _workspace(model),
        challenger=Path(trained["checkpoint"]), champion=Path(prepared["champion"]["checkpoint"]),
    )  # fmt: skip


def compile_model(model: str, trained: dict) -> dict:
    from pathlib import Path

    from pitcrew.pipeline.model_steps import compile_artifact

    return compile_artifact(_entry(model), _workspace(model), checkpoint=Path(trained["checkpoint"]))


def register(model: str, request: dict, window: dict, drift: dict | None, prepared: dict, trained: dict,
             evaluation: dict, compiled: dict) -> dict:  # fmt: skip
    from pathlib import Path

    from pitcrew.pipeline import release_steps

    entry, ws = _entry(model), _workspace(model)
    context = get_current_context()
    tags = release_steps.lineage_tags(
        dag_run_id=context["dag_run"].run_id, trigger=request["trigger"], alert=request["alert"], window=window,
        drift=drift, parent_version=prepared["champion"]["version"], evaluation=evaluation,
        compile_report=compiled["report"],
    )  # fmt: skip
    metrics = {
        f"eval_{k}": v
        for k, v in (evaluation["challenger"].get("eval") or {}).items()
        if isinstance(v, int | float)
    }
    version = release_steps.register(
        _mlflow(), entry, ws, checkpoint=Path(trained["checkpoint"]), tags=tags, metrics=metrics
    )  # the workspace's training split goes with it: the next run's drift reference
    return {"version": version, "champion": prepared["champion"]["version"]}


def replay(model: str, compiled: dict) -> dict:
    from pathlib import Path

    from pitcrew.pipeline.model_steps import replay as run_replay

    return run_replay(_workspace(model), artifact=Path(compiled["artifact"]))


def approval_request(
    model: str, registered: dict, evaluation: dict, replayed: dict, drift: dict | None
) -> str:
    from pitcrew.pipeline.release_steps import approval_body

    settings = _settings()
    context = get_current_context()
    links = {
        "MLflow version": f"{_mlflow_url()}/#/models/{model}/versions/{registered['version']}",
        "drift report": f"file://{_workspace(model).reports / 'drift.html'}",
        "run": f"{settings.airflow_url}/dags/{context['dag'].dag_id}/runs/{context['dag_run'].run_id}",
    }
    return approval_body(
        model=model, version=registered["version"], champion=registered["champion"], evaluation=evaluation,
        replay=replayed, drift=drift, links=links,
    )  # fmt: skip


def hot_swap(model: str, registered: dict, compiled: dict) -> dict:
    from pathlib import Path

    from operators.triton_hook import TritonHook

    result = TritonHook().deploy(model, registered["version"], Path(compiled["artifact"]))
    return json.loads(json.dumps(result, default=str))


def canary(model: str, registered: dict) -> dict:
    from operators.prometheus_hook import PrometheusHook, PrometheusHookError
    from pitcrew.pipeline.release_steps import canary as run_canary

    hook = PrometheusHook()

    def values(expr: str) -> list[float]:
        # An unanswered query is no evidence either way: inconclusive (empty), never a pass or a crash
        # that would leave the new version serving unwatched.
        try:
            return [float(series["value"][1]) for series in hook.query(expr)]
        except PrometheusHookError as exc:
            log.warning("canary query failed, counted as no data: %s", exc)
            return []

    return run_canary(_entry(model), version=registered["version"], query=values)


def promote(model: str) -> dict:
    from pitcrew.pipeline.release_steps import promote as run_promote

    context = get_current_context()
    registered = context["ti"].xcom_pull(task_ids="register")
    approver = _responder(context, "approval")
    result = run_promote(_mlflow(), _entry(model), version=registered["version"], approver=approver)
    return {**result, "approver": approver}


def roll_back(model: str, reason: str) -> dict:
    from operators.triton_hook import TritonHook
    from pitcrew import registry

    registered = get_current_context()["ti"].xcom_pull(task_ids="register")
    result = TritonHook().rollback(model, registered["champion"])
    registry.set_version_tags(_mlflow(), model, registered["version"], {"rolled_back": reason})
    return json.loads(json.dumps(result, default=str))


def _responder(context: Any, task_id: str) -> str | None:
    answer = context["ti"].xcom_pull(task_ids=task_id) or {}
    user = answer.get("responded_by_user") or {}
    return user.get("name") or user.get("id")


def finish(model: str) -> dict:
    """Record the run's outcome in the pipeline metrics; fail the run if it did not end well."""
    from pitcrew import pipeline_metrics

    context = get_current_context()
    ti = context["ti"]
    by_run = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])  # {run_id: {task_id: state}}
    states = by_run.get(ti.run_id, {})
    pull = ti.xcom_pull
    outcome = _outcome(states)
    trained = pull(task_ids="fine_tune") or {}
    request = pull(task_ids="validate_request") or {}
    alert_to_deploy = None
    if outcome == "deployed" and (request.get("alert") or {}).get("starts_at"):
        started = dt.datetime.fromisoformat(str(request["alert"]["starts_at"]).replace("Z", "+00:00"))
        alert_to_deploy = (dt.datetime.now(dt.UTC) - started).total_seconds()
    approval = pull(task_ids="approval") or {}
    approval_wait = None
    if approval.get("responded_at") and (asked := pull(task_ids="approval_request_time")):
        responded = approval["responded_at"]
        responded = (
            responded if isinstance(responded, dt.datetime) else dt.datetime.fromisoformat(str(responded))
        )
        approval_wait = (responded - dt.datetime.fromisoformat(asked)).total_seconds()
    pipeline_metrics.record(
        _settings().home_dir / "metrics", model, outcome=outcome, rollback=outcome == "rolled_back",
        training_seconds=trained.get("seconds"), device=trained.get("device"),
        alert_to_deploy_s=alert_to_deploy, approval_wait_s=approval_wait,
    )  # fmt: skip
    summary = {"outcome": outcome, "states": {k: str(v) for k, v in states.items()}}
    log.info("run outcome: %s", outcome)
    if outcome in ("failed", "rolled_back"):
        raise AirflowFailException(f"run ended as {outcome}: {summary['states']}")
    return summary


def _outcome(states: dict[str, Any]) -> str:
    def state(task_id: str) -> str:
        return str(states.get(task_id) or "")

    if any(state(t) in ("failed", "upstream_failed") for t in states if t != "finish"):
        return "failed"
    if state("promote") == "success":
        return "deployed"
    if state("rollback") == "success":
        return "rolled_back"
    if state("record_no_drift") == "success":
        return "no_drift"
    if state("record_rejection") == "success":
        return "rejected_by_evaluation"
    if state("prepare_training") == "skipped" and "drift" not in states:
        return "nothing_to_do"
    if state("approval") == "success" and state("hot_swap") == "skipped":
        return "rejected_by_human"
    if state("dry_run_gate") == "success" and state("approval") == "skipped":
        return "dry_run"
    return "failed"


# ------------------------------------------------------------------------------------------------
# DAG builders
# ------------------------------------------------------------------------------------------------
def _params(entry: ModelEntry, *, with_drift: bool) -> dict[str, Param]:
    params = {
        "model": Param(entry.name, type="string", enum=[entry.name], title="Model", description="The model this DAG maintains."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Everything up to and including the replay, but no approval and no swap."),
        "window_hours": Param(entry.thresholds.window_hours, type="number", minimum=0.01, title="Window (hours)",
                              description="How much recent logged traffic to check and learn from."),
    }  # fmt: skip
    if with_drift:
        params["force_retrain"] = Param(False, type="boolean", title="Force retrain",
                                        description="Fine-tune even if no drift is confirmed.")  # fmt: skip
        params["skip_drift"] = Param(False, type="boolean", title="Skip drift check",
                                     description="Do not test for drift (implies retraining).")  # fmt: skip
    return params


def _assigned_users(entry: ModelEntry) -> list[dict] | None:
    return [{"id": user, "name": user} for user in entry.approvers] or None


def build_pipeline_dag(entry: ModelEntry, *, nightly: bool, doc_md: str) -> DAG:
    """The maintenance chain; ``nightly`` starts at fine-tune on the newest labelled window (no drift gate)."""
    model = entry.name
    t = entry.thresholds
    dag = DAG(
        dag_id=nightly_dag_id(model) if nightly else maintenance_dag_id(model),
        schedule=entry.schedule if nightly else None,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,  # one maintenance run per model at a time
        tags=["pitcrew", model, "nightly" if nightly else "maintenance"],
        params=_params(entry, with_drift=not nightly),
        default_args=_default_args(),
        doc_md=doc_md,
        render_template_as_native_obj=False,
    )
    with dag:
        request = task(task_id="validate_request", retries=0)(transient_only(validate_request))(model)
        window = task(task_id="read_window")(transient_only(read_window))(model, request)
        quality = task(task_id="data_quality")(transient_only(check_quality))(model, window)
        prepare = task(task_id="prepare_training")(transient_only(prepare_training))
        if nightly:
            drift = None
            prepared = prepare(model, quality, nightly=True)
        else:
            drift = task(task_id="drift")(transient_only(check_drift))(model, request, quality)

            @task.branch(task_id="drift_gate")
            def drift_gate(request: dict, drift: dict | None) -> str:
                if request["force_retrain"] or request["skip_drift"] or (drift or {}).get("drift"):
                    return "prepare_training"
                return "record_no_drift"

            @task(task_id="record_no_drift")
            def record_no_drift(drift: dict | None) -> dict:
                return {"decision": (drift or {}).get("decision"), "reason": (drift or {}).get("reason")}

            gate = drift_gate(request, drift)
            prepared = prepare(model, quality)
            gate >> [prepared, record_no_drift(drift)]

        trained = task(task_id="fine_tune", queue="gpu", retries=1)(transient_only(fine_tune))(
            model, prepared
        )
        evaluation = task(task_id="evaluate")(transient_only(evaluate))(model, prepared, trained)

        @task.branch(task_id="evaluation_gate")
        def evaluation_gate(evaluation: dict) -> str:
            return "compile" if evaluation["decision"] == "promote" else "record_rejection"

        @task(task_id="record_rejection")
        def record_rejection(evaluation: dict) -> dict:
            return {"decision": evaluation["decision"], "reasons": evaluation["reasons"]}

        compiled = task(task_id="compile")(transient_only(compile_model))(model, trained)
        evaluation_gate(evaluation) >> [compiled, record_rejection(evaluation)]
        registered = task(task_id="register")(transient_only(register))(
            model, request, window, drift, prepared, trained, evaluation, compiled
        )
        replayed = task(task_id="replay")(transient_only(replay))(model, compiled)
        registered >> replayed

        # Only the direct downstream is skipped, so `finish` (all_done) still records the outcome.
        @task.short_circuit(task_id="dry_run_gate", ignore_downstream_trigger_rules=False)
        def dry_run_gate(request: dict) -> bool:
            return not request["dry_run"]

        body = task(task_id="approval_request")(transient_only(approval_request))(
            model, registered, evaluation, replayed, drift
        )

        @task(task_id="approval_request_time")
        def approval_request_time() -> str:
            return dt.datetime.now(dt.UTC).isoformat()

        approval = ApprovalOperator(
            task_id="approval",
            subject=f"Deploy a new version of {model}?",
            body="{{ ti.xcom_pull(task_ids='approval_request') }}",
            defaults=["Reject"],  # no answer in time is a rejection
            response_timeout=dt.timedelta(hours=t.approval_timeout_h),
            assigned_users=_assigned_users(entry),
            retries=0,
        )
        gate = dry_run_gate(request)
        replayed >> gate >> body >> approval_request_time() >> approval

        swapped = task(task_id="hot_swap", pool=SWAP_POOL)(transient_only(hot_swap))(
            model, registered, compiled
        )
        approval >> swapped
        watched = task(task_id="canary")(transient_only(canary))(model, registered)
        swapped >> watched

        @task.branch(task_id="canary_gate")
        def canary_gate(watched: dict) -> str:
            return {"successful": "canary_passed", "failed": "canary_failed"}.get(
                watched["phase"], "canary_review"
            )

        # Branch targets are markers: a branch skips the targets it does not choose for good, so the
        # inconclusive path needs its own pair of markers to reach promote or rollback later.
        passed, failed = EmptyOperator(task_id="canary_passed"), EmptyOperator(task_id="canary_failed")
        kept, reverted = EmptyOperator(task_id="review_kept"), EmptyOperator(task_id="review_rolled_back")
        review = HITLBranchOperator(
            task_id="canary_review",
            subject=f"Canary of {model} was inconclusive: keep the new version?",
            body="{{ ti.xcom_pull(task_ids='canary') }}",
            options=[KEEP, ROLL_BACK],
            options_mapping={KEEP: "review_kept", ROLL_BACK: "review_rolled_back"},
            defaults=[ROLL_BACK],  # no answer in time: roll back
            response_timeout=dt.timedelta(hours=t.approval_timeout_h),
            assigned_users=_assigned_users(entry),
            retries=0,
        )
        promoted = task(task_id="promote", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)(
            transient_only(promote)
        )(model)
        rolled_back = task(task_id="rollback", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)(
            transient_only(roll_back)
        )(model, "canary failed or was rejected")
        canary_gate(watched) >> [passed, failed, review]
        review >> [kept, reverted]
        [passed, kept] >> promoted
        [failed, reverted] >> rolled_back

        done = task(task_id="finish", trigger_rule=TriggerRule.ALL_DONE, retries=0)(finish)(model)
        for upstream in (promoted, rolled_back, review, approval, gate, replayed, registered, compiled,
                         evaluation, trained, prepared, quality, window, request):  # fmt: skip
            upstream >> done
        if not nightly:
            dag.get_task("record_no_drift") >> done
        dag.get_task("record_rejection") >> done
    return dag


def describe_rollback(model: str) -> dict:
    """What a rollback would restore: the registry's view next to what Triton serves now."""
    from operators.triton_hook import TritonHook
    from pitcrew import registry

    client = _mlflow()
    champion = registry.alias_version(client, model, registry.CHAMPION)
    previous = registry.alias_version(client, model, registry.PREVIOUS)
    if previous is None:
        raise AirflowFailException(
            f"{model} has no '{registry.PREVIOUS}' version in MLflow: nothing to roll back to"
        )
    serving = TritonHook().serving_version(model)
    tags = registry.get_version(client, model, previous).tags
    body = "\n".join(
        [
            f"### Roll `{model}` back to version {previous}",
            "",
            f"- Triton serves version **{serving}** now; MLflow champion is **{champion}**.",
            f"- Version {previous} was promoted at {tags.get('promoted_at', 'n/a')} (approved by "
            f"{tags.get('approver') or 'n/a'}); its files are still in the model repository.",
            f"- After approval Triton serves {previous} (loaded beside {serving}, no failed requests), MLflow "
            f"`champion` → {previous} and `previous` → {champion}.",
        ]
    )
    return {"champion": champion, "previous": previous, "serving": serving, "body": body}


def restore(model: str, described: dict) -> dict:
    from operators.triton_hook import TritonHook
    from pitcrew import pipeline_metrics, registry

    context = get_current_context()
    approver = _responder(context, "approval")
    swapped = TritonHook().rollback(model, described["previous"])
    aliases = registry.restore_previous(_mlflow(), model, approver=approver)
    pipeline_metrics.record(_settings().home_dir / "metrics", model, rollback=True)
    return {"serving": swapped["version"], "aliases": aliases, "approver": approver}


def build_rollback_dag(entry: ModelEntry, *, doc_md: str) -> DAG:
    model = entry.name
    dag = DAG(
        dag_id=rollback_dag_id(model),
        schedule=None,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["pitcrew", model, "rollback"],
        default_args=_default_args(),
        doc_md=doc_md,
    )
    with dag:
        described = task(task_id="describe", retries=1)(transient_only(describe_rollback))(model)
        approval = ApprovalOperator(
            task_id="approval",
            subject=f"Roll {model} back to the previous champion?",
            body="{{ ti.xcom_pull(task_ids='describe')['body'] }}",
            defaults=["Reject"],
            response_timeout=dt.timedelta(hours=entry.thresholds.approval_timeout_h),
            assigned_users=_assigned_users(entry),
            retries=0,
        )
        restored = task(task_id="restore", pool=SWAP_POOL)(transient_only(restore))(model, described)
        described >> approval >> restored
    return dag
