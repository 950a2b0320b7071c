"""Model operators: fine-tune the champion, judge the challenger, compile it, replay real traffic through it.

The work is in :mod:`pitcrew.pipeline.model_steps` and the :mod:`training` package beneath it (torch,
transformers, ONNX, TensorRT: imported when the task runs, never when a DAG is parsed). Fine-tuning and
compiling default to the ``gpu`` queue, which a worker with a GPU consumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operators.base import PitcrewOperator, ShortCircuitingOperator
from operators.errors import retry_only_transient
from operators.mlflow_hook import MlflowHook

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The Celery queue a GPU worker consumes (docker-compose.yml); the local stack runs it on the CPU.
GPU_QUEUE = "gpu"


class FineTuneOperator(PitcrewOperator):
    """Fine-tune ``base_model`` on the run's training split (from :class:`PrepareTrainingDataOperator`).

    A retried try resumes from the checkpoint the interrupted one left in the workspace. Per-step metrics
    go to MLflow. Returns ``checkpoint``, ``device``, ``seconds`` and the training ``summary``.

    :param model: the model in the models file (templated).
    :param base_model: checkpoint folder to start from, normally the champion's (templated).
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook` for the metrics.
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "base_model")

    def __init__(
        self, *, base_model: str, mlflow_conn_id: str = MlflowHook.default_conn_name, **kwargs: Any
    ) -> None:
        kwargs.setdefault("queue", GPU_QUEUE)
        super().__init__(**kwargs)
        self.base_model = base_model
        self.mlflow_conn_id = mlflow_conn_id

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        from pitcrew.pipeline.model_steps import fine_tune

        result = fine_tune(
            self.entry,
            self.run_workspace(context),
            base_model=str(self.base_model),
            mlflow_tracking_uri=MlflowHook(self.mlflow_conn_id).tracking_uri,
        )
        self.report_facts(context, training_seconds=result["seconds"], training_device=result["device"])
        return result


class EvaluateChallengerOperator(ShortCircuitingOperator):
    """Judge the challenger against the champion on the same rows; a reject ends the run here.

    McNemar's test on the new-traffic hold-out, the fixed golden set and calibration; the challenger must
    match or beat the champion (the model's ``min_accuracy_gain`` and ``max_golden_drop``). Returns the
    verdict (``decision``, ``reasons``, both models' scores); on reject the outcome is
    ``rejected_by_evaluation``.

    :param model: the model in the models file (templated).
    :param challenger: the fine-tuned checkpoint folder (templated).
    :param champion: the champion's checkpoint folder, or None for a first model (templated).
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "challenger", "champion")

    def __init__(self, *, challenger: str, champion: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.challenger = challenger
        self.champion = champion

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any] | None:
        from pitcrew.pipeline.model_steps import evaluate

        verdict = evaluate(
            self.entry,
            self.run_workspace(context),
            challenger=Path(self.challenger),
            champion=Path(self.champion) if self.champion else None,
        )
        if verdict["decision"] == "promote":
            return verdict
        self.end_run_here(context, verdict, "rejected_by_evaluation", "; ".join(verdict.get("reasons", [])))
        return None  # not reached


class CompileModelOperator(PitcrewOperator):
    """Export the checkpoint to ONNX (and a TensorRT engine where TensorRT and a GPU exist), parity-checked.

    A parity failure fails the task: nothing deployable is written. Returns ``artifact`` (the serving
    folder, docs/model-artifact.md) and ``report`` (parity, versions, TensorRT status).

    :param model: the model in the models file (templated).
    :param checkpoint: the fine-tuned checkpoint folder (templated).
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "checkpoint")

    def __init__(self, *, checkpoint: str, **kwargs: Any) -> None:
        kwargs.setdefault("queue", GPU_QUEUE)
        super().__init__(**kwargs)
        self.checkpoint = checkpoint

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        from pitcrew.pipeline.model_steps import compile_artifact

        return compile_artifact(self.entry, self.run_workspace(context), checkpoint=Path(self.checkpoint))


class ReplayTrafficOperator(PitcrewOperator):
    """Run the compiled challenger over the window's logged requests and compare with the champion's answers.

    What would change for real users: agreement, label flips per class, confidence shift, and both
    models' accuracy on the requests that got feedback. Returns that comparison.

    :param model: the model in the models file (templated).
    :param artifact: the compiled serving folder (templated).
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "artifact")

    def __init__(self, *, artifact: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.artifact = artifact

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        from pitcrew.pipeline.model_steps import replay

        return replay(self.run_workspace(context), artifact=Path(self.artifact))
