"""Per-step metrics to MLflow when a tracking URI is set; a no-op otherwise.

Uses an explicit ``MlflowClient`` instead of the fluent API so nothing global (tracking URI, active run)
leaks into the caller's process, which matters when an Airflow worker calls ``finetune`` in-process.
Metrics are buffered and sent with ``log_batch`` so a remote server does not cost one request per step.
"""

from __future__ import annotations

import time
from typing import Any


class MetricsSink:
    """Buffered metric logger bound to one MLflow run, or a silent stand-in when MLflow is not configured."""

    def __init__(self, client: Any = None, run_id: str | None = None, *, flush_every: int = 50) -> None:
        self._client = client
        self.run_id = run_id
        self._buffer: list[Any] = []
        self._flush_every = flush_every

    @classmethod
    def open(cls, tracking_uri: str | None, experiment: str, *, params: dict[str, str],
             tags: dict[str, str] | None = None) -> MetricsSink:
        if not tracking_uri:
            return cls()
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(experiment_id, tags={"pitcrew.stage": "finetune", **(tags or {})})
        client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        return cls(client, run.info.run_id)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._buffer) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        if self._client is not None and self._buffer:
            self._client.log_batch(self.run_id, metrics=self._buffer)
            self._buffer = []

    def close(self, *, status: str) -> None:
        if self._client is None:
            return
        self.flush()
        self._client.set_terminated(self.run_id, status=status)
        self._client = None
