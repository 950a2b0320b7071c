"""What every pitcrew pipeline operator shares: its model, its run's workspace, and how it reports.

An operator maintains one model of the models file (``model``, templated) and keeps its files in the
run's workspace folder (:class:`pitcrew.pipeline.workspace.Workspace`), so a retried task finds what the
last try left. Results go to XCom as small JSON-safe dicts, one XCom per key as well
(``multiple_outputs``), so a DAG can pass ``other_task.output["checkpoint"]`` to the next operator.

Two reports besides the result (docs/design.md, "Run outcomes"): a step that ends the run on purpose
declares the outcome (:meth:`PitcrewOperator.declare_outcome`), and steps report facts for the pipeline
metrics (:meth:`PitcrewOperator.report_facts`). The run's outcome task reads both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import SkipMixin
from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from pitcrew.models_file import ModelEntry
    from pitcrew.pipeline.workspace import Workspace

#: XCom keys of the two reports, and of the reason a declared outcome may give.
OUTCOME_KEY = "pitcrew_outcome"
OUTCOME_REASON_KEY = "pitcrew_outcome_reason"
FACTS_KEY = "pitcrew_facts"


def as_bool(value: Any, name: str) -> bool:
    """A templated flag: a bool, or the text Jinja renders one as ("True"/"false"/...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


class PitcrewOperator(BaseOperator):
    """Base class of pitcrew's pipeline operators.

    :param model: name of the model in the models file (templated).
    :param workspace: folder for the run's files (templated); default ``<home>/runs/<model>/<run_id>``.
    """

    template_fields: Sequence[str] = ("model", "workspace")
    ui_color = "#e8f1fb"

    def __init__(self, *, model: str, workspace: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.model = model
        self.workspace = workspace

    @property
    def entry(self) -> ModelEntry:
        """The model's entry, read when the task runs: a run outlives edits to the models file."""
        from pitcrew.models_file import load_models_file
        from pitcrew.settings import get_settings

        return load_models_file(get_settings().models_file).get(self.model)

    def run_workspace(self, context: Context) -> Workspace:
        from pathlib import Path

        from pitcrew.pipeline.workspace import Workspace
        from pitcrew.settings import get_settings

        if self.workspace:
            Path(self.workspace).mkdir(parents=True, exist_ok=True)
            return Workspace(Path(self.workspace))
        return Workspace.for_run(get_settings().home_dir, self.model, context["run_id"])

    @staticmethod
    def declare_outcome(context: Context, outcome: str, reason: str | None = None) -> None:
        context["ti"].xcom_push(key=OUTCOME_KEY, value=outcome)
        if reason:
            context["ti"].xcom_push(key=OUTCOME_REASON_KEY, value=reason)

    @staticmethod
    def report_facts(context: Context, **facts: Any) -> None:
        context["ti"].xcom_push(key=FACTS_KEY, value=facts)


class ShortCircuitingOperator(PitcrewOperator, SkipMixin):
    """A pitcrew operator that may end the run here: it skips its direct downstream tasks, not teardowns.

    The tasks further down are skipped by their trigger rules, and the run's outcome (a teardown) still
    runs. The result is pushed to XCom before skipping, since a skip leaves ``execute`` without a return.
    """

    inherits_from_skipmixin = True

    def end_run_here(self, context: Context, result: dict[str, Any], outcome: str, reason: str) -> None:
        ti = context["ti"]
        if self.multiple_outputs:
            for key, value in result.items():
                ti.xcom_push(key=key, value=value)
        ti.xcom_push(key="return_value", value=result)
        self.declare_outcome(context, outcome, reason)
        self.log.info("ending the run here (%s): %s", outcome, reason)
        downstream = [t for t in context["task"].get_direct_relatives(upstream=False) if not t.is_teardown]
        self.skip(ti=ti, tasks=downstream)
