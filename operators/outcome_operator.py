"""The run's outcome, recorded once at the end: a teardown, so it runs whichever way the run went.

It reads the outcome the ending step declared and the facts steps reported (XCom keys of
:mod:`operators.base`), together with the task states, and folds them into the pipeline metrics
(:mod:`pitcrew.pipeline_metrics`). A run that failed or rolled back fails this task, and with it the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from operators.base import FACTS_KEY, OUTCOME_KEY, OUTCOME_REASON_KEY, PitcrewOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class RunOutcomeOperator(PitcrewOperator):
    """Record how the run ended in ``pitcrew_pipeline_runs_total`` and the other pipeline metrics.

    Wire it as the DAG's teardown after its last tasks (``as_teardown(on_failure_fail_dagrun=True)``) so
    it runs after every path, including failures, with one or two edges instead of one per task.

    :param model: the model in the models file (templated).
    """

    ui_color = "#f3f3f3"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("multiple_outputs", False)
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        from pitcrew import pipeline_metrics
        from pitcrew.pipeline.outcome import decide_outcome, merge_facts
        from pitcrew.settings import get_settings

        ti = context["ti"]
        others = [task_id for task_id in context["dag"].task_ids if task_id != self.task_id]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        states = {task: state for task, state in states.items() if task != self.task_id}
        declared = ti.xcom_pull(task_ids=others, key=OUTCOME_KEY)
        facts = merge_facts(ti.xcom_pull(task_ids=others, key=FACTS_KEY))
        reasons = ti.xcom_pull(task_ids=others, key=OUTCOME_REASON_KEY)
        decided = decide_outcome(states, declared, reasons)
        pipeline_metrics.record(
            get_settings().home_dir / "metrics", self.model, outcome=decided.outcome,
            training_seconds=facts.get("training_seconds"), device=facts.get("training_device"),
            alert_to_deploy_s=facts.get("alert_to_deploy_s"), approval_wait_s=facts.get("approval_wait_s"),
            trigger=(context.get("params") or {}).get("trigger"), run_id=ti.run_id,
        )  # fmt: skip
        self.log.info("run outcome: %s (%s)", decided.outcome, decided.reason)
        summary = {"outcome": decided.outcome, "reason": decided.reason, "facts": facts}
        if not decided.successful:
            raise AirflowFailException(f"run ended as {decided.outcome}: {decided.reason}")
        return summary
