"""End to end on the real stack with the tiny model: approve, reject, and a failing canary.

Everything is real: Airflow 3 runs the generated DAGs with its LocalExecutor, approvals are answered
through Airflow's REST API by real users of its auth manager, MLflow holds the registry, Triton serves
and swaps, Prometheus answers the canary's queries.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from monitoring.inference_log import read_inference_log
from pitcrew import registry
from pitcrew.airflow_api import AirflowApi, AirflowApiError
from pitcrew.demo import BackgroundTraffic, accuracy, send, write_demo_data
from pitcrew.models_file import load_models_file
from pitcrew.pipeline.bootstrap import bootstrap
from pitcrew.serving.client import TritonControl
from pitcrew.settings import Settings
from pitcrew.stack.components import airflow_password
from tests.stack_fixtures import make_settings, running_stack
from training.tiny import build_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

LABELS = ["billing", "technical", "account", "shipping"]
RUN_TIMEOUT_S = 600


def _models_file(folder: Path, tiny: Path) -> Path:
    common = {
        "runtime": "python-onnxruntime",
        "base_model": str(tiny),
        "labels": LABELS,
        "schedule": None,
        # The real rules fire on this traffic after their `for: 10m`: alert-started runs would queue in
        # front of the runs these tests start (one run per model). The tests start every run themselves.
        "max_auto_runs_per_day": 0,
    }
    fast = {
        "window_hours": 1,
        "min_window_rows": 50,
        "approval_timeout_h": 1,
        "canary_initial_delay_s": 6,
        "canary_interval_s": 2,
        "canary_count": 3,
    }
    entries = [
        {
            # The pair layout (front + textclf_core, the stand-in of the ORT core on this Triton) end to end;
            # textclf_canary below keeps the one-model layout.
            **common, "name": "textclf", "runtime": "onnxruntime",
            "train_data": "data/textclf/train.parquet", "golden_data": "data/textclf/golden.parquet",
            "inference_log": "log/textclf", "feedback": "feedback/textclf",
            "approvers": ["approver"],
            "thresholds": {**fast, "canary_min_confidence": 0.0, "max_golden_drop": 0.2, "min_accuracy_gain": -0.05},
        },
        {
            # Same model, but a canary bar no model meets: the swap must roll back by itself.
            **common, "name": "textclf_canary",
            "train_data": "data/canary/train.parquet", "golden_data": "data/canary/golden.parquet",
            "inference_log": "log/textclf_canary", "feedback": "feedback/textclf_canary",
            "thresholds": {**fast, "canary_min_confidence": 0.999, "max_golden_drop": 0.2, "min_accuracy_gain": -0.05},
        },
    ]  # fmt: skip
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return path


class World:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models = load_models_file(settings.models_file)
        self.mlflow = MlflowClient(tracking_uri=settings.mlflow_url, registry_uri=settings.mlflow_url)
        self.triton = TritonControl(settings.triton_http_url)
        self.admin = AirflowApi(settings.airflow_url, "admin", airflow_password(settings, "admin"))
        self.approver = AirflowApi(settings.airflow_url, "approver", airflow_password(settings, "approver"))
        self.viewer = AirflowApi(settings.airflow_url, "viewer", airflow_password(settings, "viewer"))
        self.data: dict = {}

    def prepare(self, model: str) -> None:
        """First champion on domain A, then a window of labelled domain-B traffic (the drift)."""
        entry = self.models.get(model)
        self.data[model] = write_demo_data(entry, n_train=400, n_golden=32)
        result = bootstrap(entry, self.settings, epochs=4)
        assert result["version"] == 1 and result["serving_version"] == 1
        started = dt.datetime.now(dt.UTC)
        sent = send(
            self.triton, model, self.data[model]["traffic_b"].iloc[:320], feedback_root=entry.feedback
        )
        assert sent.failed == 0 and sent.versions == {"1"}
        # Triton flushes the inference log every few seconds: a run started before that flush would read
        # an empty window (the distributed profile starts its first task within about 2 s).
        deadline = time.monotonic() + 60
        while len(read_inference_log(entry.inference_log, started, dt.datetime.now(dt.UTC), model=model)) < sent.sent:
            assert time.monotonic() < deadline, f"{model}: the inference log did not get the {sent.sent} rows sent"
            time.sleep(0.5)

    def run(self, model: str, conf: dict | None = None) -> str:
        dag_id = f"pitcrew_maintenance_{model}"
        self.admin.wait_for_dag(dag_id)
        return self.admin.trigger(dag_id, {"model": model, "trigger": "manual", **(conf or {})})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("e2e")
    tiny = build_tiny_model(root / "tiny-base", LABELS, hidden_size=32, layers=2)
    settings = make_settings(root / "home", models_file=_models_file(root, tiny), airflow_parallelism=2)
    with running_stack(settings):
        world = World(settings)
        world.prepare("textclf")
        world.prepare("textclf_canary")
        yield world


def _states(world: World, dag_id: str, run_id: str) -> dict[str, str | None]:
    return world.admin.task_states(dag_id, run_id)


def _assert_run_ends(world: World, dag_id: str, run_id: str, expected: str) -> None:
    """Wait for the run to end; if it ends otherwise, say how each task ended (which one failed) and where
    the scheduler's account is (a task the scheduler failed need not show why in its own log)."""
    state = world.admin.wait_for_run(dag_id, run_id, RUN_TIMEOUT_S)
    assert state == expected, (
        f"run {run_id} ended {state!r}, not {expected!r}; tasks: {_states(world, dag_id, run_id)}; "
        f"scheduler log: {world.settings.home_dir / 'logs' / 'airflow-scheduler.log'}"
    )


def _runs_total(world: World, model: str, outcome: str) -> float:
    """``pitcrew_pipeline_runs_total{model, outcome}`` as the pipeline's textfile exports it now."""
    from prometheus_client.parser import text_string_to_metric_families

    path = world.settings.home_dir / "metrics" / f"pipeline_{model}.prom"
    if not path.exists():
        return 0.0
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            if sample.name == "pitcrew_pipeline_runs_total" and sample.labels == {"model": model, "outcome": outcome}:
                return sample.value
    return 0.0


def test_approved_run_deploys_the_challenger(world: World) -> None:
    dag_id, model = "pitcrew_maintenance_textclf", "textclf"
    before, versions = accuracy(world.triton, model, world.data[model]["eval_b"])
    assert versions == {"1"}
    run_id = world.run(model)
    world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)

    # The approval shows what changes, and only the assigned approver may answer it.
    detail = world.admin.tasks.get_hitl_detail(dag_id, run_id, "approval", -1)
    assert "accuracy, new traffic hold-out" in detail.body and "Replay of" in detail.body
    with pytest.raises(AirflowApiError, match="HTTP 403"):
        world.viewer.respond(dag_id, run_id, "approval", "Approve")

    with BackgroundTraffic(
        world.settings.triton_http_url, model, world.data[model]["eval_b"], interval_s=0.3
    ):
        world.approver.respond(dag_id, run_id, "approval", "Approve")
        _assert_run_ends(world, dag_id, run_id, "success")

    states = _states(world, dag_id, run_id)
    for task_id in ("data_quality", "drift", "prepare_training", "fine_tune", "evaluate", "compile", "register",
                    "replay", "approval", "hot_swap", "canary", "canary_decision", "promote",
                    "record_outcome"):  # fmt: skip
        assert states[task_id] == "success", (task_id, states)
    assert states["rollback"] == "skipped", states
    assert world.admin.xcom_value(dag_id, run_id, "canary")["phase"] == "successful"
    outcome = world.admin.xcom_value(dag_id, run_id, "record_outcome")
    assert outcome["outcome"] == "deployed", outcome
    assert outcome["facts"]["training_seconds"] > 0 and outcome["facts"]["approval_wait_s"] > 0

    # MLflow: aliases moved, lineage recorded.
    assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == 2
    assert registry.alias_version(world.mlflow, model, registry.PREVIOUS) == 1
    tags = registry.get_version(world.mlflow, model, 2).tags
    assert tags["airflow_dag_run_id"] == run_id
    assert tags["trigger"] == "manual"
    assert tags["parent_version"] == "1"
    assert tags["approver"] == "approver"
    assert '"drift": true' in tags["drift_report"]
    assert "onnxruntime" in tags["compile_target"]

    # Triton serves the pair version 2 and it answers the new domain at least as well.
    after, versions = accuracy(world.triton, model, world.data[model]["eval_b"])
    assert versions == {"2"}
    assert world.triton.ready_versions(model) == [2] and world.triton.ready_versions(f"{model}_core") == [2]
    assert after >= before - 0.02, (before, after)


def test_rejected_run_changes_nothing(world: World) -> None:
    dag_id, model = "pitcrew_maintenance_textclf", "textclf"
    champion = registry.alias_version(world.mlflow, model, registry.CHAMPION)
    previous = registry.alias_version(world.mlflow, model, registry.PREVIOUS)
    serving = {p.version for p in world.triton.classify(model, ["where is my parcel"])}
    rejected_before = _runs_total(world, model, "rejected_by_human")
    run_id = world.run(model, {"force_retrain": True})
    world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
    world.approver.respond(dag_id, run_id, "approval", "Reject")
    _assert_run_ends(world, dag_id, run_id, "success")
    states = _states(world, dag_id, run_id)
    assert states["approval"] == "success" and states["record_outcome"] == "success"
    for task_id in ("hot_swap", "canary", "canary_decision", "promote", "rollback"):
        assert states[task_id] == "skipped", (task_id, states)
    assert world.admin.xcom_value(dag_id, run_id, "record_outcome")["outcome"] == "rejected_by_human"
    assert _runs_total(world, model, "rejected_by_human") == rejected_before + 1
    assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == champion
    assert registry.alias_version(world.mlflow, model, registry.PREVIOUS) == previous
    assert {p.version for p in world.triton.classify(model, ["where is my parcel"])} == serving


def test_rollback_dag_restores_the_previous_champion(world: World) -> None:
    dag_id, model = "pitcrew_rollback_textclf", "textclf"
    assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == 2
    world.admin.wait_for_dag(dag_id)
    run_id = world.admin.trigger(dag_id, {})
    world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
    detail = world.admin.tasks.get_hitl_detail(dag_id, run_id, "approval", -1)
    assert "back to version 1" in detail.body and "Triton serves version **2**" in detail.body
    with BackgroundTraffic(
        world.settings.triton_http_url, model, world.data[model]["eval_b"], interval_s=0.2
    ) as traffic:
        world.approver.respond(dag_id, run_id, "approval", "Approve")
        _assert_run_ends(world, dag_id, run_id, "success")
    assert traffic.result.failed == 0 and traffic.result.sent > 0  # the swap back lost no request
    assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == 1
    assert registry.alias_version(world.mlflow, model, registry.PREVIOUS) == 2
    assert registry.get_version(world.mlflow, model, 1).tags["restored_by"] == "approver"
    assert {p.version for p in world.triton.classify(model, ["where is my parcel"])} == {"1"}
    assert world.triton.ready_versions(f"{model}_core") == [1]  # the pair went back together


def test_failed_canary_rolls_back_by_itself(world: World) -> None:
    dag_id, model = "pitcrew_maintenance_textclf_canary", "textclf_canary"
    run_id = world.run(model)
    world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
    # No approvers are configured for this model: an Admin may answer.
    with BackgroundTraffic(
        world.settings.triton_http_url, model, world.data[model]["eval_b"], interval_s=0.3
    ):
        world.admin.respond(dag_id, run_id, "approval", "Approve")
        _assert_run_ends(world, dag_id, run_id, "failed")
    states = _states(world, dag_id, run_id)
    assert states["hot_swap"] == "success" and states["canary"] == "success"
    assert states["canary_decision"] == "success" and states["rollback"] == "success"
    assert states["promote"] == "skipped"
    assert states["record_outcome"] == "failed"  # a rolled-back run ends red: someone should look
    assert _runs_total(world, model, "rolled_back") == 1
    assert world.admin.xcom_value(dag_id, run_id, "canary")["phase"] == "failed"
    assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == 1
    assert registry.get_version(world.mlflow, model, 2).tags["rolled_back"]
    assert {p.version for p in world.triton.classify(model, ["my invoice is wrong"])} == {"1"}
