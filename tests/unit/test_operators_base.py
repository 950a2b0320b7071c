"""What every pitcrew operator shares (operators/base.py) and which failures it retries (operators/errors.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DownstreamTasksSkipped
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

from operators.base import FACTS_KEY, OUTCOME_KEY, PitcrewOperator, ShortCircuitingOperator, as_bool
from operators.errors import retry_only_transient
from operators.prometheus_hook import PrometheusHookError, PrometheusUnavailableError
from pitcrew.alerts.watch import WatchForwardError, WebhookUnavailableError
from pitcrew.models_file import ModelEntry
from pitcrew.serving.errors import TritonUnavailableError
from pitcrew.settings import get_settings
from tests.unit.operator_context import RUN_ID, context_for, in_dag, use_models

MODEL = "textclf"


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    entry = ModelEntry(
        name=MODEL, train_data=str(tmp_path / "train.parquet"), inference_log=str(tmp_path / "log"),
        feedback=str(tmp_path / "fb"), labels=["billing", "technical"],
    )  # fmt: skip
    yield use_models(monkeypatch, tmp_path, entry).home_dir
    get_settings.cache_clear()


class Reporting(PitcrewOperator):
    """A step that returns a result, declares an outcome and reports facts."""

    def execute(self, context: Any) -> dict[str, Any]:
        self.declare_outcome(context, "rejected")
        self.report_facts(context, rows=120, accuracy=0.91)
        return {"model": self.entry.name, "workspace": str(self.run_workspace(context).root)}


class EndsHere(ShortCircuitingOperator):
    """A step that ends the run on purpose."""

    def execute(self, context: Any) -> dict[str, Any]:
        self.end_run_here(context, {"verdict": "no_drift", "rows": 3}, "no_drift", "nothing drifted")
        return {"not": "reached"}


class TestAsBool:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [(True, True), (False, False), ("True", True), ("true", True), (" TRUE ", True), ("1", True),
         ("yes", True), ("False", False), ("false", False), ("0", False), ("no", False), ("", False),
         ("None", False), (None, False), (1, True), (0, False)],
    )  # fmt: skip
    def test_accepts_bools_and_their_rendered_text(self, value: Any, expected: bool) -> None:
        assert as_bool(value, "forward") is expected

    @pytest.mark.parametrize("value", ["maybe", "on", "2", 2, [], {"a": 1}])
    def test_rejects_anything_else_naming_the_argument(self, value: Any) -> None:
        with pytest.raises(ValueError, match=r"deferrable must be true or false, got"):
            as_bool(value, "deferrable")


class TestPitcrewOperator:
    def test_defaults_to_multiple_outputs_and_templates_model_and_workspace(self) -> None:
        task = in_dag(lambda: Reporting(task_id="step", model=MODEL))
        assert task.multiple_outputs is True
        assert {"model", "workspace"} <= set(task.template_fields)
        assert (
            in_dag(lambda: Reporting(task_id="step", model=MODEL, multiple_outputs=False)).multiple_outputs
            is False
        )

    def test_default_workspace_is_per_model_and_run(self, home: Path) -> None:
        task = in_dag(lambda: Reporting(task_id="step", model=MODEL))
        workspace = task.run_workspace(context_for(task))
        assert workspace.root == home / "runs" / MODEL / "manual__2026-12-01T00_00_00_00_00"
        assert workspace.root.is_dir()
        other = dict(context_for(task), run_id="scheduled__2026-12-02")
        assert task.run_workspace(other).root == home / "runs" / MODEL / "scheduled__2026-12-02"

    def test_explicit_templated_workspace(self, home: Path, tmp_path: Path) -> None:
        task = in_dag(lambda: Reporting(task_id="step", model="{{ params.model }}",
                                        workspace="{{ params.base }}/{{ run_id }}"))  # fmt: skip
        context = context_for(task, params={"model": MODEL, "base": str(tmp_path / "work")})
        task.render_template_fields(context)
        assert task.model == MODEL
        workspace = task.run_workspace(context)
        assert workspace.root == tmp_path / "work" / RUN_ID
        assert workspace.root.is_dir()
        assert not (home / "runs").exists()

    def test_result_outcome_and_facts(self, home: Path) -> None:
        task = in_dag(lambda: Reporting(task_id="step", model=MODEL))
        context = context_for(task)
        result = task.execute(context)
        assert result["model"] == MODEL
        assert context["ti"].pushed(OUTCOME_KEY) == "rejected"
        assert context["ti"].pushed(FACTS_KEY) == {"rows": 120, "accuracy": 0.91}

    def test_unknown_model_is_an_error_when_the_task_runs(self, home: Path) -> None:
        task = in_dag(lambda: Reporting(task_id="step", model="nosuchmodel"))  # building the DAG is fine
        with pytest.raises(KeyError, match="nosuchmodel"):
            task.execute(context_for(task))


class TestShortCircuitingOperator:
    @staticmethod
    def _chain(**kwargs: Any) -> EndsHere:
        """step >> next >> after, and the run's outcome a teardown right after step and next."""
        with DAG(dag_id="test_dag", schedule=None):
            task = EndsHere(task_id="step", model=MODEL, **kwargs)
            following = EmptyOperator(task_id="next")
            sibling = EmptyOperator(task_id="sibling")
            outcome = EmptyOperator(task_id="outcome")
            task >> [following, sibling]
            following >> EmptyOperator(task_id="after")
            [task, following] >> outcome.as_teardown()
        return task

    def test_skips_direct_downstream_but_not_the_teardown(self) -> None:
        task = self._chain()
        context = context_for(task)
        with pytest.raises(DownstreamTasksSkipped) as info:
            task.execute(context)
        # Not "after" (its trigger rule skips it), not "outcome" (a teardown).
        assert sorted(info.value.tasks) == ["next", "sibling"]

    def test_pushes_the_result_and_declares_the_outcome_before_skipping(self) -> None:
        task = self._chain()
        context = context_for(task)
        with pytest.raises(DownstreamTasksSkipped):
            task.execute(context)
        ti = context["ti"]
        assert ti.pushed() == {"verdict": "no_drift", "rows": 3}
        assert (ti.pushed("verdict"), ti.pushed("rows")) == ("no_drift", 3)  # multiple_outputs
        assert ti.pushed(OUTCOME_KEY) == "no_drift"

    def test_single_output_pushes_only_the_return_value(self) -> None:
        task = self._chain(multiple_outputs=False)
        context = context_for(task)
        with pytest.raises(DownstreamTasksSkipped):
            task.execute(context)
        assert context["ti"].pushed() == {"verdict": "no_drift", "rows": 3}
        assert context["ti"].pushed("verdict") is None


def _raising(exc: BaseException):
    @retry_only_transient
    def execute(self: Any, context: Any) -> None:
        raise exc

    return execute


TRANSIENT = [
    TritonUnavailableError("Triton at 127.0.0.1:8000 unreachable"),
    requests.ConnectionError("connection refused"),
    httpx.ConnectError("connection refused"),
    MlflowException("server unavailable", error_code=TEMPORARILY_UNAVAILABLE),
    # What MLflow's REST client raises once its retries of an unreachable server are spent (default code).
    MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/get failed with exception x"),
    PrometheusUnavailableError("Prometheus unreachable"),
    WebhookUnavailableError("webhook answered HTTP 503"),
]
PERMANENT = [
    ValueError("labels do not match the model's"),
    MlflowException("model version 7 not found", error_code=RESOURCE_DOES_NOT_EXIST),
    PrometheusHookError("query 'bad(' failed: HTTP 400"),
    WatchForwardError("webhook answered HTTP 401"),
    KeyError("nosuchmodel"),
]


class TestRetryOnlyTransient:
    def test_returns_the_result_and_keeps_the_name(self) -> None:
        @retry_only_transient
        def execute(context: Any) -> dict[str, int]:
            """Run."""
            return {"rows": context["rows"]}

        assert execute({"rows": 4}) == {"rows": 4}
        assert (execute.__name__, execute.__doc__) == ("execute", "Run.")

    @pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
    def test_transient_errors_propagate_unchanged_for_airflow_to_retry(self, exc: Exception) -> None:
        with pytest.raises(type(exc)) as info:
            _raising(exc)(None, {})
        assert info.value is exc

    @pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
    def test_other_errors_fail_the_task_for_good(self, exc: Exception) -> None:
        with pytest.raises(AirflowFailException) as info:
            _raising(exc)(None, {})
        assert str(info.value) == f"{type(exc).__name__}: {exc}"
        assert info.value.__cause__ is exc

    def test_a_real_refused_connection_is_transient(self) -> None:
        from tests.stack_fixtures import free_ports

        @retry_only_transient
        def execute() -> None:
            requests.get(f"http://127.0.0.1:{free_ports(1)[0]}/", timeout=2)

        with pytest.raises(requests.ConnectionError):
            execute()

    @pytest.mark.parametrize(
        "exc",
        [
            AirflowSkipException("nothing to do"),
            DownstreamTasksSkipped(tasks=["next"]),
            AirflowFailException("no"),
        ],
        ids=lambda e: type(e).__name__,
    )
    def test_airflow_signals_are_never_wrapped(self, exc: Exception) -> None:
        with pytest.raises(type(exc)) as info:
            _raising(exc)(None, {})
        assert info.value is exc
