"""Canary analysis after a hot-swap: Argo-Rollouts-style measurements of the new version on Prometheus.

The operator holds a worker slot only to build the analysis; the measuring (an initial delay, then
``count`` rounds ``interval_s`` apart) runs in the triggerer (:class:`CanaryTrigger`). The verdict goes to
XCom for :class:`~operators.approval_operators.CanaryDecisionOperator`, which promotes, rolls back or
asks a human. The rules are in :mod:`pitcrew.canary`; the queries and bounds per model in
:func:`pitcrew.pipeline.release_steps.canary_metrics`.
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
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "version", "deferrable")

    def __init__(
        self,
        *,
        version: int | str,
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
        deferrable: bool | str = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.version, self.prometheus_conn_id, self.deferrable = version, prometheus_conn_id, deferrable

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any] | None:
        from pitcrew.canary import run_canary
        from pitcrew.pipeline.release_steps import canary_metrics, canary_policy

        entry = self.entry
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
