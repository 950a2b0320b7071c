"""The release chain that maintenance and nightly runs share, from the training split to promote or roll back.

    prepare_training → fine_tune → evaluate → compile            (task group "train"; a reject ends here)
    → register → replay → shadow → approval                      (a human; reject or timeout ends here)
    → hot_swap → canary → canary_decision → promote | rollback   (task group "deploy")
    record_outcome: the teardown, after whichever path the run took

Data passes between steps as XCom templates (:func:`pitcrew_dags.common.xcom`), so the graph's edges are
exactly the chain above.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import TaskGroup

from operators.approval_operators import CanaryDecisionOperator, DeploymentApprovalOperator
from operators.canary_operators import CanaryAnalysisOperator
from operators.data_operators import PrepareTrainingDataOperator
from operators.model_operators import (
    CompileModelOperator,
    EvaluateChallengerOperator,
    FineTuneOperator,
    ReplayTrafficOperator,
)
from operators.notifiers import approval_notifiers
from operators.outcome_operator import RunOutcomeOperator
from operators.registry_operators import PromoteChampionOperator, RegisterModelVersionOperator
from operators.shadow_operator import ShadowTrafficOperator
from operators.triton_operators import SWAP_POOL, TritonHotSwapOperator, TritonRollbackOperator
from pitcrew.models_file import ModelEntry
from pitcrew_dags.common import approval_timeout, approvers, xcom


def release_chain(
    entry: ModelEntry, *, after: Any, drift: str | None, skip_when_nothing_to_learn: bool
) -> None:
    """Wire the chain after ``after`` in the DAG being defined.

    :param drift: template of the drift summary for the lineage and the approval; None for a run without
        a drift check.
    :param skip_when_nothing_to_learn: no champion or too few new labels ends the run as ``nothing_to_do``
        (a schedule) instead of failing it (an alert that asked for a fix).
    """
    model = entry.name
    with TaskGroup(
        "train", prefix_group_id=False, tooltip="Fine-tune the champion on new labels; judge; compile"
    ):
        prepared = PrepareTrainingDataOperator(
            task_id="prepare_training", model=model, skip_when_nothing_to_learn=skip_when_nothing_to_learn
        )
        trained = FineTuneOperator(
            task_id="fine_tune", model=model, base_model=xcom("prepare_training", "champion_checkpoint"),
            retries=1,  # a retry resumes from the interrupted try's checkpoint
        )  # fmt: skip
        evaluated = EvaluateChallengerOperator(
            task_id="evaluate", model=model, challenger=xcom("fine_tune", "checkpoint"),
            champion=xcom("prepare_training", "champion_checkpoint"),
        )  # fmt: skip
        compiled = CompileModelOperator(
            task_id="compile", model=model, checkpoint=xcom("fine_tune", "checkpoint")
        )

    registered = RegisterModelVersionOperator(
        task_id="register", model=model, checkpoint=xcom("fine_tune", "checkpoint"),
        artifact=xcom("compile", "artifact"), compile_report=xcom("compile", "report"),
        evaluation=xcom("evaluate"), window=xcom("data_quality", "window"), drift=drift,
        parent_version=xcom("prepare_training", "champion_version"),
        trigger="{{ params.trigger }}", alert="{{ params.alert }}",
    )  # fmt: skip
    replayed = ReplayTrafficOperator(task_id="replay", model=model, artifact=xcom("compile", "artifact"))
    shadowed = ShadowTrafficOperator(
        task_id="shadow", model=model, version=xcom("register", "version"), artifact=xcom("compile", "artifact"),
        dry_run="{{ params.dry_run }}",
    )  # fmt: skip
    approval = DeploymentApprovalOperator(
        task_id="approval", model=model, version=xcom("register", "version"),
        parent_version=xcom("prepare_training", "champion_version"), evaluation=xcom("evaluate"),
        replay=xcom("replay"), shadow=xcom("shadow"), drift=drift, dry_run="{{ params.dry_run }}",
        assigned_users=approvers(entry), response_timeout=approval_timeout(entry),
        notifiers=approval_notifiers(entry, "deploy"), retries=0,
    )  # fmt: skip

    with TaskGroup(
        "deploy", prefix_group_id=False, tooltip="Hot-swap into Triton, canary, promote or roll back"
    ):
        swapped = TritonHotSwapOperator(
            task_id="hot_swap",
            model=model,
            version=xcom("register", "version"),
            artifact=xcom("compile", "artifact"),
        )
        canary = CanaryAnalysisOperator(task_id="canary", model=model, version=xcom("register", "version"))
        decision = CanaryDecisionOperator(
            task_id="canary_decision", subject=f"The canary of {model} was inconclusive: keep the new version?",
            model=model, version=xcom("register", "version"),
            assigned_users=approvers(entry), response_timeout=approval_timeout(entry),
            notifiers=approval_notifiers(entry, "canary"), retries=0,
        )  # fmt: skip
        promoted = PromoteChampionOperator(
            task_id="promote", model=model, version=xcom("register", "version"), alert="{{ params.alert }}",
            # a weighted rollout's promotion is a Triton load (the commit): one at a time, like every swap
            **({"pool": SWAP_POOL} if entry.rollout.weighted else {}),
        )  # fmt: skip
        rolled_back = TritonRollbackOperator(
            task_id="rollback", model=model, version=xcom("prepare_training", "champion_version"),
            rejected_version=xcom("register", "version"),
        )  # fmt: skip

    outcome = RunOutcomeOperator(task_id="record_outcome", model=model)

    after >> prepared >> trained >> evaluated >> compiled >> registered >> replayed >> shadowed >> approval
    approval >> swapped >> canary >> decision >> [promoted, rolled_back]
    [promoted, rolled_back] >> outcome.as_teardown(on_failure_fail_dagrun=True)
