"""Data operators: the traffic window and its quality, drift against the champion, the training split.

The logic is in :mod:`pitcrew.pipeline.data_steps` (and :mod:`monitoring` beneath it); these classes read
their arguments, get clients from the Hooks and report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException

from operators.base import PitcrewOperator, ShortCircuitingOperator, as_bool
from operators.errors import retry_only_transient
from operators.mlflow_hook import MlflowHook

if TYPE_CHECKING:
    from airflow.sdk import Context


class DataQualityOperator(PitcrewOperator):
    """Read the model's recent traffic (inference log joined with feedback) and check its labelled rows.

    Bad rows (empty text, unknown label, duplicate request id ...) are quarantined in the workspace, never
    silently dropped. Returns ``window`` (rows, labelled rows, time range) and ``quality`` (the checks).

    :param model: the model in the models file (templated).
    :param window_hours: how much recent traffic to read (templated); default: the model's ``window_hours``.
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "window_hours")

    def __init__(self, *, window_hours: float | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_hours = window_hours

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        from pitcrew.pipeline import data_steps

        entry, ws = self.entry, self.run_workspace(context)
        hours = (
            entry.thresholds.window_hours if self.window_hours in (None, "") else _hours(self.window_hours)
        )
        window = data_steps.load_window(entry, ws, hours=hours)
        quality = data_steps.data_quality(entry, ws)
        self.log.info(
            "window: %s; quality: %s", window, {k: quality.get(k) for k in ("clean", "quarantined")}
        )
        return {"window": window, "quality": quality}


def _hours(value: float | str) -> float:
    """``window_hours`` as rendered (a number, or Jinja's text of one): finite and positive, or a named error."""
    try:
        hours = float(value)
    except (TypeError, ValueError):
        hours = math.nan
    if not (math.isfinite(hours) and hours > 0):
        raise ValueError(f"window_hours must be a positive number of hours, got {value!r}")
    return hours


class DriftCheckOperator(ShortCircuitingOperator):
    """Test the window against the champion's training data; with no drift, end the run here (``no_drift``).

    Text features (length, tokens, unknown-token rate) and the predicted-label mix are tested against the
    rows the champion learned from (its MLflow training snapshot; the models file's ``train_data`` for a
    champion registered without one). Writes JSON and HTML reports and exports the scores as gauges.

    :param model: the model in the models file (templated).
    :param skip_test: do not test at all and go on (templated; a ``skip_drift`` run).
    :param proceed_without_drift: go on even when no drift is confirmed (templated; ``force_retrain``).
    :param reference: reference table to test against instead of the champion's snapshot (templated).
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook`.
    """

    template_fields: Sequence[str] = (
        *PitcrewOperator.template_fields, "skip_test", "proceed_without_drift", "reference",
    )  # fmt: skip

    def __init__(
        self,
        *,
        skip_test: bool | str = False,
        proceed_without_drift: bool | str = False,
        reference: str | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.skip_test = skip_test
        self.proceed_without_drift = proceed_without_drift
        self.reference = reference
        self.mlflow_conn_id = mlflow_conn_id

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any] | None:
        from pitcrew import registry
        from pitcrew.pipeline import data_steps
        from pitcrew.settings import get_settings

        if as_bool(self.skip_test, "skip_test"):
            return {
                "decision": "skipped",
                "drift": None,
                "reason": "drift check skipped by request",
                "columns": [],
            }
        entry, ws = self.entry, self.run_workspace(context)
        reference = self.reference
        if not reference:
            client = MlflowHook(self.mlflow_conn_id).get_conn()
            snapshot = registry.champion_training_snapshot(client, entry.name, ws.path("champion/data"))
            reference = str(snapshot) if snapshot is not None else None
        result = data_steps.drift(entry, ws, get_settings().home_dir / "metrics", reference)
        if result["drift"] or as_bool(self.proceed_without_drift, "proceed_without_drift"):
            return result
        self.end_run_here(context, result, "no_drift", result["reason"])
        return None  # not reached: end_run_here skips downstream by raising


class PrepareTrainingDataOperator(PitcrewOperator):
    """Split the clean labelled window into training and evaluation rows, and fetch the champion.

    Training rows mix the new traffic with a sample of the champion's own training rows, so the model
    does not forget the old domain; the evaluation rows are a disjoint hold-out of the new traffic.
    Returns the split's row counts and ``champion_version``, ``champion_checkpoint``, ``champion_serving``.

    :param model: the model in the models file (templated).
    :param skip_when_nothing_to_learn: with no champion yet or too few new labels, skip (outcome
        ``nothing_to_do``) instead of failing: a schedule that finds nothing new is not an error.
    :param mlflow_conn_id: connection of :class:`~operators.mlflow_hook.MlflowHook`.
    """

    def __init__(
        self,
        *,
        skip_when_nothing_to_learn: bool = False,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.skip_when_nothing_to_learn = skip_when_nothing_to_learn
        self.mlflow_conn_id = mlflow_conn_id

    def _nothing_to_learn(self, context: Context, reason: str) -> AirflowSkipException:
        self.declare_outcome(context, "nothing_to_do", reason)
        return AirflowSkipException(reason)

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any]:
        from pitcrew import registry
        from pitcrew.pipeline.data_steps import PipelineDataError, split_for_training
        from pitcrew.pipeline.release_steps import download_champion

        entry, ws = self.entry, self.run_workspace(context)
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        if registry.alias_version(client, entry.name, registry.CHAMPION) is None:
            reason = f"{entry.name} has no champion yet (run `pitcrew bootstrap`): nothing to retrain"
            if self.skip_when_nothing_to_learn:
                raise self._nothing_to_learn(context, reason)
            raise registry.RegistryError(reason)
        snapshot = registry.champion_training_snapshot(client, entry.name, ws.path("champion/data"))
        try:
            split = split_for_training(entry, ws, reference=str(snapshot) if snapshot else None)
        except PipelineDataError as exc:
            if self.skip_when_nothing_to_learn:
                raise self._nothing_to_learn(context, f"nothing new to learn: {exc}") from exc
            raise
        champion = download_champion(client, entry, ws)
        return {
            **split,
            "champion_version": champion["version"],
            "champion_checkpoint": champion["checkpoint"],
            "champion_serving": champion["serving"],
        }
