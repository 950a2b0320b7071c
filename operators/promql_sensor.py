"""Sensor that waits for a PromQL condition; deferrable, so the wait costs no worker slot."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator

from operators.prometheus_hook import PrometheusHook
from operators.promql_trigger import PromQLTrigger


class PromQLSensorError(RuntimeError):
    """The condition never held before the timeout, or Prometheus rejected the query."""


class PromQLSensor(BaseSensorOperator):
    """Succeed when ``query`` returns at least one sample; return those samples.

    :param query: PromQL with its threshold, e.g. ``model:...:ratio_rate5m > 0.01`` (templated).
    :param prometheus_conn_id: connection of :class:`PrometheusHook`.
    :param deferrable: check once, then wait in the triggerer (default) instead of poking on a worker.
    """

    template_fields: Sequence[str] = ("query",)

    def __init__(
        self,
        *,
        query: str,
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.query = query
        self.prometheus_conn_id = prometheus_conn_id
        self.deferrable = deferrable
        self._result: list[dict[str, Any]] = []

    @property
    def hook(self) -> PrometheusHook:
        return PrometheusHook(self.prometheus_conn_id)

    def poke(self, context: Any) -> bool:
        self._result = self.hook.query(self.query)
        self.log.info("PromQL %s returned %d samples", self.query, len(self._result))
        return bool(self._result)

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            super().execute(context)
            return self._result
        if self.poke(context):
            return self._result
        self.defer(
            trigger=PromQLTrigger(
                url=self.hook.get_url(),
                query=self.query,
                poll_interval_s=self.poke_interval,
                timeout_s=self.timeout,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 60),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[dict[str, Any]]:
        if event.get("status") != "success":
            raise PromQLSensorError(f"PromQL sensor ended with {event.get('status')}: {event}")
        return event["result"]
