"""Triton operators with the hook's swap calls recorded (a real Triton runs in the integration tests).

MLflow is real (SQLite store, no server); so are the pipeline metrics textfile and the settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from airflow.sdk.exceptions import AirflowFailException
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from operators.base import OUTCOME_KEY
from operators.triton_hook import TritonHook
from operators.triton_operators import (
    SWAP_POOL,
    RestorePreviousChampionOperator,
    TritonHotSwapOperator,
    TritonRollbackOperator,
)
from pitcrew import registry
from pitcrew.models_file import ModelEntry
from pitcrew.serving.errors import ModelLoadError, TritonUnavailableError
from pitcrew.serving.swap import SwapResult
from pitcrew.serving.verify import VerificationReport
from pitcrew.settings import Settings, get_settings
from tests.unit.mlflow_fixtures import sqlite_mlflow
from tests.unit.operator_context import APPROVED, context_for, in_dag, record_hitl, use_models

MODEL = "textclf"
LABELS = ["billing", "technical", "account", "shipping"]


@dataclass
class TritonCalls:
    """Records what the operators ask of :class:`TritonHook`; answers like the real swapper would."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    serving: int | None = 1
    error: Exception | None = None

    def result(self, action: str, model: str, version: int) -> dict:
        if self.error is not None:
            raise self.error
        verification = VerificationReport(
            version=version, golden_texts=32, mismatched_labels=0, max_probability_diff=np.float32(2.5e-6),
            p95_ms=np.float64(12.5), latency_budget_ms=250.0, seconds=0.8,
        )  # fmt: skip
        result = SwapResult(model, action, version, self.serving, 1.2, 3.4, verification).as_dict()
        self.serving = version
        return result


@pytest.fixture
def triton(monkeypatch: pytest.MonkeyPatch) -> TritonCalls:
    recorder = TritonCalls()

    def deploy(hook: TritonHook, model: str, version: int, artifact: Path | None = None) -> dict:
        recorder.calls.append(("deploy", hook.triton_conn_id, model, version, artifact))
        return recorder.result("deploy", model, version)

    def rollback(hook: TritonHook, model: str, version: int | None = None) -> dict:
        recorder.calls.append(("rollback", hook.triton_conn_id, model, version))
        return recorder.result("rollback", model, version)

    def serving_version(hook: TritonHook, model: str) -> int | None:
        recorder.calls.append(("serving_version", hook.triton_conn_id, model))
        return recorder.serving

    monkeypatch.setattr(TritonHook, "deploy", deploy)
    monkeypatch.setattr(TritonHook, "rollback", rollback)
    monkeypatch.setattr(TritonHook, "serving_version", serving_version)
    return recorder


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    entry = ModelEntry(
        name=MODEL, train_data=str(tmp_path / "train.parquet"), inference_log=str(tmp_path / "log"),
        feedback=str(tmp_path / "fb"), labels=LABELS, approvers=["ann"],
    )  # fmt: skip
    yield use_models(monkeypatch, tmp_path, entry)
    get_settings.cache_clear()


@pytest.fixture
def mlflow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_template: Path, settings: Settings
) -> MlflowClient:
    """The ``mlflow_default`` connection on a fresh SQLite store in tmp_path."""
    return sqlite_mlflow(monkeypatch, tmp_path, mlflow_template)


def _versions(client: MlflowClient, tmp_path: Path, count: int, *, promote: int = 0) -> list[int]:
    """Register ``count`` versions (a ``model.onnx`` is all the registry checks); promote the first ``promote``."""
    versions = []
    for i in range(1, count + 1):
        serving = tmp_path / f"serving-{i}"
        serving.mkdir()
        (serving / "model.onnx").write_bytes(f"onnx-{i}".encode())
        versions.append(registry.register_version(client, MODEL, serving_dir=serving).version)
    for version in versions[:promote]:
        registry.promote(client, MODEL, version, approver="ann")
    return versions


def _rollbacks(settings: Settings) -> float | None:
    path = settings.home_dir / "metrics" / f"pipeline_{MODEL}.prom"
    if not path.exists():
        return None
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            if sample.name == "pitcrew_rollbacks_total" and sample.labels == {"model": MODEL}:
                return sample.value
    raise AssertionError(f"no pitcrew_rollbacks_total in {path}")


def _aliases(client: MlflowClient) -> tuple[int | None, int | None]:
    return (
        registry.alias_version(client, MODEL, registry.CHAMPION),
        registry.alias_version(client, MODEL, registry.PREVIOUS),
    )


class TestTritonHotSwapOperator:
    @pytest.fixture(autouse=True)
    def _approved(self, monkeypatch: pytest.MonkeyPatch) -> None:
        record_hitl(monkeypatch, approval=APPROVED)

    @pytest.mark.parametrize(
        ("recorded", "reason"),
        [
            (None, "never asked anyone"),
            ({"response_received": False, "chosen_options": None}, "marked successful by hand"),
            ({**APPROVED, "chosen_options": ["Reject"]}, r"answered \['Reject'\] by ann"),
            ({**APPROVED, "responded_by_user": {"id": "eve", "name": "eve"}}, "eve .* not one of the model's approvers"),
        ],
    )  # fmt: skip
    def test_without_a_valid_approval_on_record_nothing_is_swapped(
        self, triton: TritonCalls, monkeypatch: pytest.MonkeyPatch, recorded: Any, reason: str, settings: Settings
    ) -> None:
        calls = record_hitl(monkeypatch, approval=recorded)
        task = in_dag(lambda: TritonHotSwapOperator(task_id="hot_swap", model=MODEL, version=2))
        with pytest.raises(AirflowFailException, match=f"refusing to swap {MODEL} to version 2: .*{reason}"):
            task.execute(context_for(task))
        assert triton.calls == []
        assert calls == [("pitcrew_airflow_api", task.dag.dag_id, context_for(task)["run_id"], "approval")]

    def test_the_approver_is_returned_with_the_swap(self, triton: TritonCalls, settings: Settings) -> None:
        task = in_dag(lambda: TritonHotSwapOperator(task_id="hot_swap", model=MODEL, version=2))
        assert task.execute(context_for(task))["approver"] == "ann"

    def test_runs_in_the_swap_pool_unless_told_otherwise(self) -> None:
        assert SWAP_POOL == "pitcrew_triton_swaps"
        task = in_dag(lambda: TritonHotSwapOperator(task_id="hot_swap", model=MODEL, version=2))
        assert task.pool == SWAP_POOL
        other = in_dag(lambda: TritonHotSwapOperator(task_id="hot_swap", model=MODEL, version=2, pool="mine"))
        assert other.pool == "mine"

    def test_deploys_the_version_with_its_artifact(self, triton: TritonCalls, tmp_path: Path) -> None:
        task = in_dag(
            lambda: TritonHotSwapOperator(
                task_id="hot_swap", model=MODEL, version="2", artifact=str(tmp_path / "a")
            ),
            "canary",
        )
        result = task.execute(context_for(task))
        assert triton.calls == [("deploy", "triton_default", MODEL, 2, tmp_path / "a")]
        assert (result["action"], result["version"], result["previous"]) == ("deploy", 2, 1)
        assert result["verification"]["p95_ms"] == 12.5
        json.dumps(result)  # XCom-safe, numpy scalars included

    def test_already_published_version_and_another_connection(self, triton: TritonCalls) -> None:
        task = in_dag(
            lambda: TritonHotSwapOperator(
                task_id="hot_swap", model=MODEL, version=3, triton_conn_id="triton_b"
            )
        )
        task.execute(context_for(task))
        assert triton.calls == [("deploy", "triton_b", MODEL, 3, None)]

    def test_refused_load_fails_for_good(self, triton: TritonCalls) -> None:
        triton.error = ModelLoadError("version 2 failed to load: bad config")
        task = in_dag(lambda: TritonHotSwapOperator(task_id="hot_swap", model=MODEL, version=2))
        with pytest.raises(AirflowFailException, match="ModelLoadError: version 2 failed to load"):
            task.execute(context_for(task))

    def test_unreachable_triton_is_retried(self, triton: TritonCalls) -> None:
        triton.error = TritonUnavailableError("connection refused")
        task = in_dag(lambda: TritonHotSwapOperator(task_id="hot_swap", model=MODEL, version=2))
        with pytest.raises(TritonUnavailableError):
            task.execute(context_for(task))


class TestTritonRollbackOperator:
    @staticmethod
    def _task(**kwargs: Any) -> TritonRollbackOperator:
        return in_dag(lambda: TritonRollbackOperator(task_id="rollback", model=MODEL, **kwargs))

    def test_runs_in_the_swap_pool(self) -> None:
        assert self._task(version=1, rejected_version=2).pool == SWAP_POOL

    def test_serves_the_old_version_and_marks_the_rejected_one(
        self, triton: TritonCalls, mlflow: MlflowClient, settings: Settings, tmp_path: Path
    ) -> None:
        old, rejected = _versions(mlflow, tmp_path, 2, promote=1)
        triton.serving = rejected
        task = self._task(version=str(old), rejected_version=str(rejected))
        context = context_for(task)
        result = task.execute(context)

        assert triton.calls == [("rollback", "triton_default", MODEL, old)]
        assert (result["action"], result["version"], result["previous"]) == ("rollback", old, rejected)
        assert (
            registry.get_version(mlflow, MODEL, rejected).tags["rolled_back"]
            == "canary failed or was rejected"
        )
        assert "rolled_back" not in registry.get_version(mlflow, MODEL, old).tags
        assert _aliases(mlflow) == (old, None)  # the champion never moved
        assert context["ti"].pushed(OUTCOME_KEY) == "rolled_back"
        assert _rollbacks(settings) == 1

    def test_reason_is_recorded_and_rollbacks_add_up(
        self, triton: TritonCalls, mlflow: MlflowClient, settings: Settings, tmp_path: Path
    ) -> None:
        old, first, second = _versions(mlflow, tmp_path, 3, promote=1)
        for rejected in (first, second):
            task = self._task(
                version=old, rejected_version=rejected, reason=f"canary of v{rejected}: p99 1.8 s"
            )
            task.execute(context_for(task))
        assert (
            registry.get_version(mlflow, MODEL, second).tags["rolled_back"]
            == f"canary of v{second}: p99 1.8 s"
        )
        assert _rollbacks(settings) == 2

    def test_unreachable_triton_changes_nothing_and_is_retried(
        self, triton: TritonCalls, mlflow: MlflowClient, settings: Settings, tmp_path: Path
    ) -> None:
        old, rejected = _versions(mlflow, tmp_path, 2, promote=1)
        triton.error = TritonUnavailableError("connection refused")
        task = self._task(version=old, rejected_version=rejected)
        context = context_for(task)
        with pytest.raises(TritonUnavailableError):
            task.execute(context)
        assert "rolled_back" not in registry.get_version(mlflow, MODEL, rejected).tags
        assert context["ti"].pushed(OUTCOME_KEY) is None
        assert _rollbacks(settings) is None


class TestRestorePreviousChampionOperator:
    APPROVAL = {"chosen_options": ["Approve"], "responded_by_user": {"id": "ann", "name": "ann"}}

    @pytest.fixture(autouse=True)
    def _approved(self, monkeypatch: pytest.MonkeyPatch) -> None:
        record_hitl(monkeypatch, approval=APPROVED)

    def test_an_approval_marked_by_hand_restores_nothing(
        self, triton: TritonCalls, mlflow: MlflowClient, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        v1, v2 = _versions(mlflow, tmp_path, 2, promote=2)
        record_hitl(monkeypatch, approval={"response_received": False, "chosen_options": None})
        task, context = self._run(v1)
        with pytest.raises(AirflowFailException, match="marked successful by hand"):
            task.execute(context)
        assert triton.calls == []
        assert _aliases(mlflow) == (v2, v1)

    def _run(self, version: Any) -> tuple[RestorePreviousChampionOperator, dict[str, Any]]:
        task = in_dag(
            lambda: RestorePreviousChampionOperator(task_id="restore", model=MODEL, version=version)
        )
        return task, context_for(task, approval=self.APPROVAL)

    def test_runs_in_the_swap_pool(self) -> None:
        assert self._run(1)[0].pool == SWAP_POOL

    def test_serves_previous_again_and_swaps_the_aliases(
        self, triton: TritonCalls, mlflow: MlflowClient, settings: Settings, tmp_path: Path
    ) -> None:
        v1, v2 = _versions(mlflow, tmp_path, 2, promote=2)
        triton.serving = v2
        task, context = self._run(str(v1))
        assert task.execute(context) == {
            "serving": v1,
            "aliases": {"champion": v1, "previous": v2},
            "approver": "ann",
        }
        assert triton.calls == [("rollback", "triton_default", MODEL, v1)]
        assert _aliases(mlflow) == (v1, v2)
        assert registry.get_version(mlflow, MODEL, v2).tags["rolled_back_by"] == "ann"
        assert registry.get_version(mlflow, MODEL, v1).tags["restored_by"] == "ann"
        assert _rollbacks(settings) == 1

    def test_refuses_when_previous_moved_since_the_approval(
        self, triton: TritonCalls, mlflow: MlflowClient, settings: Settings, tmp_path: Path
    ) -> None:
        v1, v2, v3 = _versions(mlflow, tmp_path, 3, promote=3)  # approved v1; meanwhile v3 was promoted
        task, context = self._run(v1)
        with pytest.raises(
            AirflowFailException, match=rf"'previous' is now {v2}, not the approved version {v1}"
        ):
            task.execute(context)
        assert triton.calls == []
        assert _aliases(mlflow) == (v3, v2)
        assert "restored_by" not in registry.get_version(mlflow, MODEL, v1).tags
        assert _rollbacks(settings) is None

    def test_refuses_when_there_is_no_previous_any_more(
        self, triton: TritonCalls, mlflow: MlflowClient, settings: Settings, tmp_path: Path
    ) -> None:
        (v1,) = _versions(mlflow, tmp_path, 1, promote=1)
        task, context = self._run(v1)
        with pytest.raises(AirflowFailException, match="'previous' is now None"):
            task.execute(context)
        assert triton.calls == []
        assert _aliases(mlflow) == (v1, None)

    def test_triton_failure_leaves_the_registry_alone(
        self, triton: TritonCalls, mlflow: MlflowClient, settings: Settings, tmp_path: Path
    ) -> None:
        v1, v2 = _versions(mlflow, tmp_path, 2, promote=2)
        triton.error = ModelLoadError(f"version {v1} failed to load")
        task, context = self._run(v1)
        with pytest.raises(AirflowFailException, match="ModelLoadError"):
            task.execute(context)
        assert _aliases(mlflow) == (v2, v1)
        assert _rollbacks(settings) is None
