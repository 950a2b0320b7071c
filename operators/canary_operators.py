"""Canary analysis after a hot-swap: Argo-Rollouts-style measurements of the new version on Prometheus.

The operator holds a worker slot only to build the analysis; the measuring (an initial delay, then
``count`` rounds ``interval_s`` apart) runs in the triggerer (:class:`CanaryTrigger`). The verdict goes to
XCom for :class:`~operators.approval_operators.CanaryDecisionOperator`, which promotes, rolls back or
asks a human. The rules are in :mod:`pitcrew.canary`; the queries and bounds per model in
:func:`pitcrew.pipeline.release_steps.canary_metrics`.

With a weighted rollout (the model's ``rollout.mode`` is not ``all_at_once``) the same task moves the
challenger's weight through the model's ``rollout.steps``: it sets a step's weight (a moment in a worker),
defers to :class:`~operators.rollout_trigger.RolloutStepTrigger`, which compares challenger and champion
over the same windows, and on its verdict sets the next weight and defers again. A failed step sets the
weight back to 0 at once, before the rollback task unloads the challenger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from operators.base import PitcrewOperator, as_bool
from operators.canary_trigger import CanaryTrigger, inconclusive
from operators.errors import retry_only_transient
from operators.prometheus_hook import PrometheusHook, PrometheusHookError
from operators.triton_hook import TritonHook

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Room for the triggerer's own delays beyond the analysis's planned duration.
DEFERRAL_MARGIN = timedelta(minutes=10)


class CanaryAnalysisOperator(PitcrewOperator):
    """Measure the serving version's failure ratio, p99 latency and mean confidence against the model's bounds.

    Returns the verdict: ``phase`` (successful, failed or inconclusive), ``reason`` and every
    ``measurements``. An empty or NaN answer is inconclusive, never a pass; so is an analysis that could
    not run at all (Prometheus connection missing, triggerer error): a human then decides.

    :param model: the model in the models file (templated).
    :param version: the version that now serves (templated).
    :param prometheus_conn_id: connection of :class:`~operators.prometheus_hook.PrometheusHook`.
    :param deferrable: measure in the triggerer (default) instead of sleeping in a worker slot.
    :param triton_conn_id: connection of :class:`~operators.triton_hook.TritonHook` (weighted rollouts).
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "version", "deferrable")

    def __init__(
        self,
        *,
        version: int | str,
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
        deferrable: bool | str = True,
        triton_conn_id: str = TritonHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.version, self.prometheus_conn_id, self.deferrable = version, prometheus_conn_id, deferrable
        self.triton_conn_id = triton_conn_id

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any] | None:
        from pitcrew.canary import run_canary
        from pitcrew.pipeline.release_steps import canary_metrics, canary_policy

        entry = self.entry
        if entry.rollout.weighted:
            return self._step(0, [])
        metrics, policy = canary_metrics(entry, int(self.version)), canary_policy(entry)
        if not as_bool(self.deferrable, "deferrable"):
            hook = PrometheusHook(self.prometheus_conn_id)
            try:
                hook.get_url()  # resolve the connection now, as the trigger does before measuring
            except Exception as exc:  # noqa: BLE001 - a verdict for a human, like the trigger's error event
                return self._report(
                    inconclusive(f"the canary analysis could not run: {type(exc).__name__}: {exc}")
                )
            return self._report(run_canary(metrics, policy, lambda q: self._values(hook, q)).to_dict())
        planned = timedelta(seconds=policy.initial_delay_s + policy.interval_s * policy.count)
        self.log.info("measuring %s v%s in the triggerer for about %s", entry.name, self.version, planned)
        self.defer(
            trigger=CanaryTrigger(
                metrics=[asdict(m) for m in metrics],
                policy=asdict(policy),
                prometheus_conn_id=self.prometheus_conn_id,
            ),
            method_name="execute_complete",
            timeout=planned + DEFERRAL_MARGIN,
        )
        return None  # not reached: defer raises

    def _values(self, hook: PrometheusHook, expr: str) -> list[float]:
        # An unanswered query is no evidence either way: inconclusive (empty), never a pass or a crash
        # that would leave the new version serving unwatched.
        try:
            return hook.values(expr)
        except PrometheusHookError as exc:
            self.log.warning("canary query failed, counted as no data: %s", exc)
            return []

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "success":
            return self._report(event["result"])
        return self._report(inconclusive(f"the canary analysis could not run: {event.get('message', event)}"))

    def _report(self, verdict: dict[str, Any]) -> dict[str, Any]:
        """The verdict, with each metric's query and bound and Prometheus's address: what a person reviewing
        an inconclusive canary needs to see the numbers for themselves."""
        from pitcrew.pipeline.release_steps import canary_metrics

        self.log.info(
            "canary of %s v%s: %s (%s)", self.model, self.version, verdict["phase"], verdict["reason"]
        )
        metrics = [asdict(m) for m in canary_metrics(self.entry, int(self.version))]
        try:
            prometheus = PrometheusHook(self.prometheus_conn_id).get_url()
        except Exception:  # noqa: BLE001 - no connection: the verdict says so already, links are extra
            prometheus = None
        return {**verdict, "metrics": metrics, "prometheus_url": prometheus}

    # A weighted rollout ---------------------------------------------------------------------------
    def _step(self, index: int, done: list[dict[str, Any]]) -> None:
        """Set step ``index``'s weight and defer to its analysis."""
        from operators.rollout_trigger import RolloutStepTrigger

        plan = self.entry.rollout
        step, analysis = plan.steps[index], plan.analysis
        table = TritonHook(self.triton_conn_id).set_weight(self.model, step.weight, step=index + 1)
        if table["challenger"] != int(self.version):
            raise RuntimeError(f"{self.model}: the rollout under way is of version {table['challenger']}, "
                               f"not {self.version}")  # fmt: skip
        planned = timedelta(seconds=max(step.pause, analysis.initial_delay + analysis.interval * analysis.count))
        self.log.info("%s v%s at weight %g (step %d of %d); analysing in the triggerer for about %s",
                      self.model, self.version, step.weight, index + 1, len(plan.steps), planned)  # fmt: skip
        self.defer(
            trigger=RolloutStepTrigger(
                model=self.model, champion=table["champion"], challenger=table["challenger"], weight=step.weight,
                pause_s=step.pause, analysis=analysis.model_dump(), tolerances=plan.tolerances.model_dump(),
                prometheus_conn_id=self.prometheus_conn_id,
            ),
            method_name="step_complete",
            kwargs={"index": index, "done": done},
            timeout=planned + DEFERRAL_MARGIN,
        )  # fmt: skip

    def step_complete(
        self, context: Context, event: dict[str, Any], index: int, done: list[dict[str, Any]]
    ) -> dict[str, Any]:
        plan = self.entry.rollout
        weight = plan.steps[index].weight
        if event.get("status") == "success":
            result = event["result"]
        else:
            message = f"the analysis could not run: {event.get('message', event)}"
            result = {"weight": weight, "phase": "inconclusive", "reason": message, "measurements": []}
        done = [*done, result]
        where = f"step {index + 1} of {len(plan.steps)} at weight {weight:g}"
        if result["phase"] == "failed":
            # Every request back to the champion now; the rollback task unloads the challenger.
            TritonHook(self.triton_conn_id).set_weight(self.model, 0.0, step=index + 1)
            return self._report_steps("failed", f"{where}: {result['reason']}; weight set back to 0", done)
        if result["phase"] != "successful":
            return self._report_steps("inconclusive", f"{where}: {result['reason']}", done)
        if index + 1 < len(plan.steps):
            self._step(index + 1, done)
        return self._report_steps(
            "successful", f"all {len(plan.steps)} steps passed; the challenger answers all requests", done
        )

    def _report_steps(self, phase: str, reason: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        self.log.info("rollout of %s v%s: %s (%s)", self.model, self.version, phase, reason)
        return {"phase": phase, "reason": reason, "rollout": self.entry.rollout.mode, "steps": steps,
                "measurements": []}  # fmt: skip
