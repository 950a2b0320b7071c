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


class TestShadow:
    @pytest.fixture
    def calls(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[tuple]]:
        entry = ModelEntry(
            name=MODEL, train_data=str(tmp_path / "train.parquet"), inference_log=str(tmp_path / "log"),
            feedback=str(tmp_path / "fb"), labels=["billing", "technical"],
            rollout=Rollout(mode="shadow", shadow={"duration": "10m", "min_requests": 50}),
        )  # fmt: skip
        use_models(monkeypatch, tmp_path, entry)
        recorded: list[tuple] = []
        for name in ("abort_rollout", "start_rollout", "set_weight"):
            monkeypatch.setattr(TritonHook, name, lambda hook, *a, _n=name, **k: recorded.append((_n, a, k)))
        yield recorded
        get_settings.cache_clear()

    def _task(self, **kwargs: Any):
        from operators.shadow_operator import ShadowTrafficOperator

        kwargs = {"model": MODEL, "version": CHALLENGER, "artifact": "/art", "prometheus_conn_id": CONN_ID, **kwargs}
        return in_dag(lambda: ShadowTrafficOperator(task_id="shadow", **kwargs))

    def test_loads_the_challenger_in_shadow_and_waits_in_the_triggerer(self, calls) -> None:
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        task = self._task()
        with pytest.raises(TaskDeferred) as deferred:
            task.execute(context_for(task))
        assert [c[0] for c in calls] == ["abort_rollout", "start_rollout", "set_weight"]
        assert calls[1][1] == (MODEL, CHALLENGER, Path("/art"))
        assert calls[2][1:] == ((MODEL, 0.0), {"step": 0, "mode": "shadow"})
        assert isinstance(deferred.value.trigger, TimeDeltaTrigger) and deferred.value.method_name == "measure"

    def test_measures_agreement_then_unloads_the_challenger(
        self, calls, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        import datetime as dt

        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "prometheus", "host": prometheus.url}))
        started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=600)
        selector = f'model="{MODEL}",challenger="{CHALLENGER}"'
        for metric, value in (("compared_total", 200.0), ("agreed_total", 180.0), ("confidence_shift_sum", -10.0)):
            prometheus.answers[f"sum(increase(pitcrew_shadow_{metric}{{{selector}}}[610s]))"] = [sample({}, value)]
        task = self._task()
        result = task.measure(context_for(task), None, started_at=started.isoformat())
        assert (result["compared"], result["agreement"], result["mean_confidence_shift"]) == (200.0, 0.9, -0.05)
        assert result["enough"] and [c[0] for c in calls] == ["abort_rollout"]

    @pytest.mark.parametrize("dry_run", [True, "True"])
    def test_a_dry_run_shadows_nothing(self, calls, dry_run: object) -> None:
        task = self._task(dry_run=dry_run)
        assert task.execute(context_for(task)) == {"mode": "shadow", "shadowed": False} and calls == []


def test_the_approval_states_the_plan_and_the_shadow() -> None:
    from pitcrew.pipeline.release_steps import approval_body

    plan = Rollout(**PLAN)
    body = approval_body(model=MODEL, version=4, champion=3, evaluation={}, replay={}, drift=None, links={},
                         shadow={"shadowed": True, "seconds": 600, "compared": 200, "agreement": 0.9,
                                 "mean_confidence_shift": -0.05, "enough": True, "min_requests": 50},
                         plan=plan.describe(3))  # fmt: skip
    assert "**Live shadow** (600 s, 200 live texts" in body and "- agreement: 0.900" in body
    assert "roll out in steps: 10% (2m) → 50% → 100%" in body and "back to version 3" in body
    assert "Approve to hot-swap" in Rollout().describe(3)
