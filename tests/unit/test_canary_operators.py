"""CanaryAnalysisOperator: deferred to CanaryTrigger, or measuring synchronously against a (tiny, real) Prometheus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

import operators.prometheus_hook as prometheus_hook
from operators.canary_operators import CanaryAnalysisOperator
from operators.canary_trigger import CanaryTrigger
from pitcrew.models_file import ModelEntry, Thresholds
from pitcrew.pipeline.release_steps import canary_metrics
from pitcrew.settings import get_settings
from tests.stack_fixtures import free_ports
from tests.unit.conftest import FakePrometheus, sample
from tests.unit.operator_context import context_for, in_dag, use_models

MODEL = "textclf"
VERSION = 7
CONN_ID = "canary_prom"


def _entry(tmp_path: Path, **thresholds: Any) -> ModelEntry:
    return ModelEntry(
        name=MODEL, train_data=str(tmp_path / "train.parquet"), inference_log=str(tmp_path / "log"),
        feedback=str(tmp_path / "fb"), labels=["billing", "technical"], thresholds=Thresholds(**thresholds),
    )  # fmt: skip


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Write the models file with one entry whose canary thresholds the test chooses."""

    def write(**thresholds: Any) -> ModelEntry:
        entry = _entry(tmp_path, **thresholds)
        use_models(monkeypatch, tmp_path, entry)
        return entry

    yield write
    get_settings.cache_clear()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook's own retry policy without its backoff sleeps."""
    monkeypatch.setattr(
        prometheus_hook, "CLIENT_RETRY", {**prometheus_hook.CLIENT_RETRY, "backoff_factor": 0}
    )


def _canary(**kwargs: Any) -> CanaryAnalysisOperator:
    kwargs = {"model": MODEL, "version": VERSION, "prometheus_conn_id": CONN_ID, **kwargs}
    return in_dag(lambda: CanaryAnalysisOperator(task_id="canary", **kwargs), "canary_decision")


def _connect(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "prometheus", **fields}))


def _answer(prometheus: FakePrometheus, entry: ModelEntry, **values: Any) -> None:
    """Answer each of the model's canary queries with one sample, or an answer given as is (a tuple, a list)."""
    for metric in canary_metrics(entry, VERSION):
        value = values[metric.name]
        model_sample = [sample({"model": MODEL, "version": str(VERSION)}, value)]
        prometheus.answers[metric.query] = value if isinstance(value, tuple | list) else model_sample


class TestDeferred:
    def test_defers_to_the_canary_trigger_with_the_models_metrics_and_policy(self, models) -> None:
        entry = models(canary_initial_delay_s=60, canary_interval_s=20, canary_count=5, canary_failure_limit=1,
                       canary_failure_ratio=0.02, canary_p99_latency_s=0.5, canary_min_confidence=0.7)  # fmt: skip
        task = _canary()
        with pytest.raises(TaskDeferred) as info:
            task.execute(context_for(task))
        deferred = info.value
        assert isinstance(deferred.trigger, CanaryTrigger)
        assert deferred.method_name == "execute_complete"
        _, kwargs = deferred.trigger.serialize()
        assert kwargs["metrics"] == [asdict(m) for m in canary_metrics(entry, VERSION)]
        assert [(m["name"], m["max_value"], m["min_value"]) for m in kwargs["metrics"]] == [
            ("failure_ratio", 0.02, None), ("p99_latency_seconds", 0.5, None), ("mean_confidence", None, 0.7)
        ]  # fmt: skip
        assert all(f'version="{VERSION}"' in m["query"] for m in kwargs["metrics"])
        assert kwargs["policy"] == {"initial_delay_s": 60, "interval_s": 20, "count": 5, "failure_limit": 1,
                                    "inconclusive_limit": 0}  # fmt: skip
        assert kwargs["prometheus_conn_id"] == CONN_ID
        assert deferred.timeout >= timedelta(seconds=60 + 20 * 5)

    def test_templated_version_and_deferrable_render(self, models) -> None:
        models()
        task = _canary(version="{{ params.version }}", deferrable="{{ params.deferrable }}")
        context = context_for(task, params={"version": "12", "deferrable": "True"})
        task.render_template_fields(context)
        with pytest.raises(TaskDeferred) as info:
            task.execute(context)
        assert all('version="12"' in m["query"] for m in info.value.trigger.metrics)

    def test_success_event_returns_the_verdict(self, models) -> None:
        models()
        verdict = {"phase": "failed", "reason": "failure_ratio = [0.2] breached <= 0.01", "measurements": []}
        task = _canary()
        result = task.execute_complete(context_for(task), {"status": "success", "result": verdict})
        # The verdict, with what a reviewer needs to check it: each query and bound, and Prometheus's address.
        assert {k: result[k] for k in verdict} == verdict
        assert [m["name"] for m in result["metrics"]] == ["failure_ratio", "p99_latency_seconds", "mean_confidence"]
        assert result["metrics"][0]["max_value"] == 0.01 and 'version="7"' in result["metrics"][0]["query"]
        assert "prometheus_url" in result

    def test_error_event_is_an_inconclusive_verdict_naming_the_error(self, models) -> None:
        models()
        task = _canary()
        event = {
            "status": "error",
            "message": "AirflowNotFoundException: The conn_id `canary_prom` isn't defined",
        }
        verdict = task.execute_complete(context_for(task), event)
        assert verdict["phase"] == "inconclusive"
        assert "could not run" in verdict["reason"] and "canary_prom` isn't defined" in verdict["reason"]

    def test_invalid_deferrable_fails_naming_it(self, models) -> None:
        models()
        task = _canary(deferrable="sometimes")
        with pytest.raises(AirflowFailException, match="deferrable must be true or false"):
            task.execute(context_for(task))


class TestSynchronous:
    @pytest.fixture
    def entry(self, models, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus) -> ModelEntry:
        _connect(monkeypatch, host=prometheus.url)
        return models(canary_initial_delay_s=0, canary_interval_s=0, canary_count=3, canary_failure_limit=0)

    @staticmethod
    def _run(deferrable: Any = False) -> dict[str, Any]:
        task = _canary(deferrable=deferrable)
        return task.execute(context_for(task))

    def test_within_bounds_is_successful(self, entry: ModelEntry, prometheus: FakePrometheus) -> None:
        _answer(prometheus, entry, failure_ratio=0.0, p99_latency_seconds=0.2, mean_confidence=0.9)
        verdict = self._run()
        assert verdict["phase"] == "successful"
        assert len(verdict["measurements"]) == 9
        assert prometheus.queries == [m.query for m in canary_metrics(entry, VERSION)] * 3

    def test_rendered_false_text_measures_synchronously(
        self, entry: ModelEntry, prometheus: FakePrometheus
    ) -> None:
        _answer(prometheus, entry, failure_ratio=0.0, p99_latency_seconds=0.2, mean_confidence=0.9)
        assert self._run(deferrable="False")["phase"] == "successful"

    def test_breach_fails_early(self, entry: ModelEntry, prometheus: FakePrometheus) -> None:
        _answer(prometheus, entry, failure_ratio=0.0, p99_latency_seconds=3.0, mean_confidence=0.9)
        verdict = self._run()
        assert verdict["phase"] == "failed" and "p99_latency_seconds" in verdict["reason"]
        assert len(prometheus.queries) == 2  # stopped at the first breach (failure limit 0)

    def test_no_traffic_is_inconclusive(self, entry: ModelEntry, prometheus: FakePrometheus) -> None:
        _answer(prometheus, entry, failure_ratio=[], p99_latency_seconds=[], mean_confidence=[])
        verdict = self._run()
        assert verdict["phase"] == "inconclusive" and "human" in verdict["reason"]

    def test_refused_query_is_inconclusive_not_a_crash(
        self, entry: ModelEntry, prometheus: FakePrometheus
    ) -> None:
        refused = (400, {"status": "error", "errorType": "bad_data", "error": "parse error"})
        _answer(prometheus, entry, failure_ratio=refused, p99_latency_seconds=0.2, mean_confidence=0.9)
        verdict = self._run()
        assert verdict["phase"] == "inconclusive" and "failure_ratio" in verdict["reason"]

    @pytest.mark.usefixtures("quick_retries", "models")
    def test_unreachable_prometheus_is_inconclusive(self, monkeypatch: pytest.MonkeyPatch, models) -> None:
        _connect(monkeypatch, host="127.0.0.1", port=free_ports(1)[0])
        models(canary_initial_delay_s=0, canary_interval_s=0, canary_count=1)
        assert self._run()["phase"] == "inconclusive"

    def test_missing_connection_is_inconclusive_like_the_deferred_path(self, models) -> None:
        models(canary_initial_delay_s=0, canary_interval_s=0, canary_count=1)
        task = _canary(deferrable=False, prometheus_conn_id="pitcrew_no_such_prometheus")
        verdict = task.execute(context_for(task))
        assert verdict["phase"] == "inconclusive"
        assert "could not run" in verdict["reason"] and "pitcrew_no_such_prometheus" in verdict["reason"]
