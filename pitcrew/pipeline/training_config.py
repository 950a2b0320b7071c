"""The one mapping from a models-file entry to a fine-tuning run's ``FinetuneConfig``.

Used by the first champion (:func:`pitcrew.pipeline.bootstrap.bootstrap`) and by every later challenger
(:func:`pitcrew.pipeline.model_steps.fine_tune`), so both train with the entry's ``training`` settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pitcrew.models_file import ModelEntry

if TYPE_CHECKING:
    from training.finetune import FinetuneConfig


def finetune_config(
    entry: ModelEntry,
    *,
    output_dir: Path,
    train_data: Path,
    mlflow_tracking_uri: str | None,
    base_model: str | None = None,
    eval_data: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    epochs: float | None = None,
) -> FinetuneConfig:
    """``entry``'s labels and ``training`` settings; the keyword arguments are the run's own choices.

    ``base_model`` defaults to the entry's (the champion's checkpoint for a challenger), ``epochs`` to
    ``entry.training.epochs``. Runs are unattended: no progress bar, and a retry replaces the output folder.
    """
    from training.finetune import FinetuneConfig  # imported when a run starts, not when a DAG is parsed

    return FinetuneConfig(
        output_dir=output_dir,
        train_data=train_data,
        eval_data=eval_data,
        base_model=base_model or entry.base_model,
        labels=list(entry.labels),
        epochs=entry.training.epochs if epochs is None else epochs,
        learning_rate=entry.training.learning_rate,
        batch_size=entry.training.batch_size,
        time_budget_s=entry.training.time_budget_s,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=False,
        overwrite=True,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_experiment=f"pitcrew/{entry.name}/finetune",
    )
