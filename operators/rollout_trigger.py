"""Trigger that runs one step of a weighted rollout's analysis in Airflow's triggerer.

The operator set the step's weight before deferring; this trigger waits ``initial_delay``, then takes
``count`` measurements ``interval`` apart, each comparing the challenger with the champion over the last
``interval`` (pitcrew/rollout/compare.py, queries in pitcrew/rollout/queries.py), stops early once failed
measurements exceed ``failure_limit``, holds the step until its ``pause`` is over, and fires once with the
step's verdict. A query Prometheus cannot answer is no data (inconclusive), never a pass. At weight 100 the
champion answers nothing: the challenger is then compared with the champion's last window before the step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from operators.prometheus_hook import PrometheusHook
from operators.promql_trigger import prometheus_client, query_vector
from pitcrew.canary import Phase
from pitcrew.rollout.compare import StepAnalysis, compare
from pitcrew.rollout.plan import Analysis, Tolerances
from pitcrew.rollout.queries import version_queries, version_window


class RolloutStepTrigger(BaseTrigger):
    """Fire once with ``{"status": "success", "result": <the step's verdict>}`` (or ``status: error``).

    :param model: the model; :param champion: and :param challenger: its two versions.
    :param weight: the challenger's weight in this step (reported with the verdict).
    :param pause_s: the least time the step holds, whatever the analysis takes.
    :param analysis: and :param tolerances: as dicts (pitcrew/rollout/plan.py).
    """

    def __init__(
        self,
        model: str,
        champion: int,
        challenger: int,
        weight: float,
        pause_s: float,
        analysis: dict[str, Any],
        tolerances: dict[str, Any],
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
    ) -> None:
        super().__init__()
        self.model, self.champion, self.challenger, self.weight = model, champion, challenger, weight
        self.pause_s, self.analysis, self.tolerances = pause_s, analysis, tolerances
        self.prometheus_conn_id = prometheus_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"model": self.model, "champion": self.champion, "challenger": self.challenger,
             "weight": self.weight, "pause_s": self.pause_s, "analysis": self.analysis,
             "tolerances": self.tolerances, "prometheus_conn_id": self.prometheus_conn_id},
        )  # fmt: skip

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        try:
            conn = await PrometheusHook.aget_connection(self.prometheus_conn_id)
            params = PrometheusHook.connection_params(conn)
            step = StepAnalysis(self.weight, Analysis(**self.analysis))
            tolerances = Tolerances(**self.tolerances)
        except Exception as exc:  # noqa: BLE001 - reported to the operator as an event, never lost
            yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
            return
        phase = await self._measure(step, tolerances, params, started)
        if phase is not Phase.FAILED:  # a failed step ends at once; a passing one holds its pause
            await asyncio.sleep(max(0.0, self.pause_s - (time.monotonic() - started)))
        yield TriggerEvent({"status": "success", "result": step.to_dict(phase)})

    async def _measure(
        self, step: StepAnalysis, tolerances: Tolerances, params: dict[str, Any], started: float
    ) -> Phase:
        analysis = step.analysis
        async with prometheus_client(params) as client:
            await asyncio.sleep(analysis.initial_delay)
            while not step.done:
                await asyncio.sleep(analysis.interval)
                # At 100 % the champion's window is the last one before this step's weight was set.
                baseline = time.monotonic() - started if self.weight >= 100 else 0.0
                windows = [
                    version_window(v, await self._answers(client, params["url"], v, analysis.interval,
                                                          baseline if v == self.champion else 0.0))
                    for v in (self.champion, self.challenger)
                ]  # fmt: skip
                if (ended := step.observe(compare(*windows, tolerances))) is not None:
                    return ended
        return step.conclude()

    async def _answers(
        self, client: httpx.AsyncClient, url: str, version: int, window_s: float, offset_s: float
    ) -> dict:
        answers: dict[str, list] = {}
        queries = version_queries(self.model, version, window_s, champion=self.champion, offset_s=offset_s)
        for name, query in queries.items():
            try:
                vector = await query_vector(client, url, query)
            except ValueError as exc:  # a query Prometheus refuses: no evidence either way
                self.log.warning("rollout query %s refused: %s", name, exc)
                vector = None
            answers[name] = [
                (series.get("metric", {}), float(series["value"][1])) for series in vector or () if series.get("value")
            ]
        return answers
