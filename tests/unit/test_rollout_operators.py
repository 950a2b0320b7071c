"""A weighted rollout in the operators: the canary task walks the steps (a weight, then a deferral to
RolloutStepTrigger), and the trigger compares the versions on a (tiny, real HTTP) Prometheus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from operators.canary_operators import CanaryAnalysisOperator
from operators.rollout_trigger import RolloutStepTrigger
from operators.triton_hook import TritonHook
from pitcrew.models_file import ModelEntry
from pitcrew.rollout.plan import Rollout
from pitcrew.rollout.queries import version_queries
from pitcrew.settings import get_settings
from tests.unit.conftest import FakePrometheus, sample
from tests.unit.operator_context import context_for, in_dag, use_models

MODEL, CHAMPION, CHALLENGER, CONN_ID = "textclf", 3, 4, "rollout_prom"
PLAN = {"mode": "canary", "steps": [{"weight": 10, "pause": "2m"}, {"weight": 50}, {"weight": 100}],
        "analysis": {"initial_delay": 0, "interval": "30s", "count": 2, "failure_limit": 0}}  # fmt: skip


@pytest.fixture
def weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[tuple[float, int]]]:
    """The models file with a canary plan; every weight the operator sets, in order."""
    entry = ModelEntry(
        name=MODEL, train_data=str(tmp_path / "train.parquet"), inference_log=str(tmp_path / "log"),
        feedback=str(tmp_path / "fb"), labels=["billing", "technical"], rollout=Rollout(**PLAN),
    )  # fmt: skip
    use_models(monkeypatch, tmp_path, entry)
    set_weights: list[tuple[float, int]] = []

    def set_weight(hook: TritonHook, model: str, weight: float, *, step: int, mode: str = "split") -> dict:
        set_weights.append((weight, step))
        return {"model": model, "champion": CHAMPION, "challenger": CHALLENGER, "weight": weight, "step": step}

    monkeypatch.setattr(TritonHook, "set_weight", set_weight)
    yield set_weights
    get_settings.cache_clear()


def _canary() -> CanaryAnalysisOperator:
    return in_dag(lambda: CanaryAnalysisOperator(task_id="canary", model=MODEL, version=CHALLENGER,
                                                 prometheus_conn_id=CONN_ID), "canary_decision")  # fmt: skip


def _step(phase: str, weight: float) -> dict[str, Any]:
    return {"status": "success", "result": {"weight": weight, "phase": phase, "reason": f"{phase} because",
                                            "measurements": []}}  # fmt: skip


def test_each_step_sets_its_weight_then_defers_its_analysis(weights) -> None:
    task = _canary()
    context = context_for(task)
    with pytest.raises(TaskDeferred) as first:
        task.execute(context)
    assert weights == [(10, 1)]
    trigger = first.value.trigger
    assert isinstance(trigger, RolloutStepTrigger) and first.value.method_name == "step_complete"
    assert (trigger.champion, trigger.challenger, trigger.weight, trigger.pause_s) == (CHAMPION, CHALLENGER, 10, 120)
    assert trigger.analysis["interval"] == 30 and trigger.analysis["count"] == 2
    assert first.value.timeout.total_seconds() == 120 + 600  # the longer of pause and analysis, plus margin
    assert first.value.kwargs == {"index": 0, "done": []}

    with pytest.raises(TaskDeferred) as second:
        task.step_complete(context, _step("successful", 10), **first.value.kwargs)
    assert weights == [(10, 1), (50, 2)]
    assert second.value.kwargs["index"] == 1 and len(second.value.kwargs["done"]) == 1

    with pytest.raises(TaskDeferred) as third:
        task.step_complete(context, _step("successful", 50), **second.value.kwargs)
    verdict = task.step_complete(context, _step("successful", 100), **third.value.kwargs)
    assert verdict["phase"] == "successful" and [s["weight"] for s in verdict["steps"]] == [10, 50, 100]
    assert weights == [(10, 1), (50, 2), (100, 3)]  # nothing set back: promote takes it from 100


def test_a_failed_step_sets_the_weight_back_to_zero_at_once(weights) -> None:
    task = _canary()
    context = context_for(task)
    with pytest.raises(TaskDeferred):
        task.execute(context)
    verdict = task.step_complete(context, _step("failed", 10), index=0, done=[])
    assert verdict["phase"] == "failed" and "step 1 of 3 at weight 10" in verdict["reason"]
    assert weights == [(10, 1), (0.0, 1)]


@pytest.mark.parametrize("event", [_step("inconclusive", 10), {"status": "error", "message": "no triggerer"}])
def test_an_inconclusive_or_unrun_step_goes_to_a_human_at_its_weight(weights, event: dict) -> None:
    task = _canary()
    verdict = task.step_complete(context_for(task), event, index=0, done=[])
    assert verdict["phase"] == "inconclusive" and weights == []  # the weight stays while a human decides


def _answer(prometheus: FakePrometheus, version: int, **figures: Any) -> None:
    queries = version_queries(MODEL, version, 1, champion=CHAMPION)
    labels = {"model": MODEL, "version": str(version)}
    for name, query in queries.items():
        value = figures.get(name)
        if name == "class_counts":
            prometheus.answers[query] = [sample({**labels, "class": k}, v) for k, v in (value or {}).items()]
        elif value is not None:
            prometheus.answers[query] = [sample(labels, value)]


@pytest.mark.parametrize(("challenger_p99", "phase"), [(0.021, "successful"), (0.080, "failed")])
def test_the_trigger_compares_both_versions_on_prometheus(
    monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus, challenger_p99: float, phase: str
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "prometheus", "host": prometheus.url}))
    mix = {"billing": 60.0, "technical": 40.0}
    _answer(prometheus, CHAMPION, requests=900, failures=0, p99_s=0.020, mean_confidence=0.9, class_counts=mix)
    _answer(prometheus, CHALLENGER, requests=100, failures=0, p99_s=challenger_p99, mean_confidence=0.9,
            class_counts=mix)  # fmt: skip
    plan = Rollout(**{**PLAN, "analysis": {"initial_delay": 0, "interval": 0.05, "count": 2}})
    trigger = RolloutStepTrigger(MODEL, CHAMPION, CHALLENGER, weight=10, pause_s=0.0,
                                 analysis=plan.analysis.model_dump(), tolerances=plan.tolerances.model_dump(),
                                 prometheus_conn_id=CONN_ID)  # fmt: skip
    classname, kwargs = trigger.serialize()
    assert classname == "operators.rollout_trigger.RolloutStepTrigger" and RolloutStepTrigger(**kwargs).weight == 10

    async def first() -> Any:
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first())
    result = event["result"]
    assert event["status"] == "success" and result["phase"] == phase, result
    # a failure ends the step at the first measurement; a pass takes all of them
    assert len(result["measurements"]) == (2 if phase == "successful" else 1)
    checks = {c["name"]: c for c in result["measurements"][0]["checks"]}
    assert checks["p99 latency"]["challenger"] == challenger_p99 and checks["accuracy"]["phase"] == "not_measured"
