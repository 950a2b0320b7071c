"""Trigger that runs a canary analysis in Airflow's triggerer, so the minutes of waiting hold no worker slot.

It is :class:`pitcrew.canary.CanaryAnalysis` (the rules) fed by asynchronous PromQL queries: wait the
initial delay, then ``count`` rounds ``interval_s`` apart, stop early when the failure limit is exceeded,
and yield one event with the verdict. A query Prometheus cannot answer counts as no data (inconclusive),
never as a pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from operators.prometheus_hook import PrometheusHook, sample_values
from operators.promql_trigger import prometheus_client, query_vector
from pitcrew.canary import CanaryAnalysis, CanaryMetric, CanaryPolicy, CanaryResult, Phase


class CanaryTrigger(BaseTrigger):
    """Measure canary metrics on Prometheus and fire once with ``{"status": "success", "result": {...}}``.

    :param metrics: the metrics as dicts (``name``, ``query``, ``max_value`` or ``min_value``).
    :param policy: the analysis settings as a dict (``initial_delay_s``, ``interval_s``, ``count``,
        ``failure_limit``, ``inconclusive_limit``).
    :param prometheus_conn_id: Prometheus connection, resolved in the triggerer (no credentials in kwargs).
    """

    def __init__(
        self,
        metrics: list[dict[str, Any]],
        policy: dict[str, Any],
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
    ) -> None:
        super().__init__()
        self.metrics = metrics
        self.policy = policy
        self.prometheus_conn_id = prometheus_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"metrics": self.metrics, "policy": self.policy, "prometheus_conn_id": self.prometheus_conn_id},
        )

    async def _values(self, client: httpx.AsyncClient, url: str, metric: CanaryMetric) -> list[float]:
        try:
            vector = await query_vector(client, url, metric.query)
        except ValueError as exc:  # a query Prometheus refuses: no evidence either way
            self.log.warning("canary query %s refused: %s", metric.name, exc)
            return []
        if vector is None:
            self.log.warning("canary query %s: Prometheus unavailable, counted as no data", metric.name)
            return []
        return sample_values(vector)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            conn = await PrometheusHook.aget_connection(self.prometheus_conn_id)
            params = PrometheusHook.connection_params(conn)
            analysis = CanaryAnalysis([CanaryMetric(**m) for m in self.metrics], CanaryPolicy(**self.policy))
        except Exception as exc:  # noqa: BLE001 - reported to the operator as an event, never lost
            yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
            return
        result = await self._analyse(analysis, params)
        yield TriggerEvent({"status": "success", "result": result.to_dict()})

    async def _analyse(self, analysis: CanaryAnalysis, params: dict[str, Any]) -> CanaryResult:
        policy = analysis.policy
        async with prometheus_client(params) as client:
            await asyncio.sleep(policy.initial_delay_s)
            for round_index in range(policy.count):
                if round_index:
                    await asyncio.sleep(policy.interval_s)
                for metric in analysis.metrics:
                    if ended := analysis.observe(metric, await self._values(client, params["url"], metric)):
                        return ended
        return analysis.conclude()


def inconclusive(reason: str) -> dict[str, Any]:
    """A verdict for a canary that could not be measured at all: a human decides."""
    return CanaryResult(Phase.INCONCLUSIVE, reason).to_dict()
