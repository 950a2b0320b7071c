"""The nightly retrain DAG end to end on the real stack with the tiny model.

A night with nothing to learn (no champion yet, or no new labels) is a green run that records
``nothing_to_do`` with its reason; a night with enough new labels fine-tunes, registers and waits for a
human, and nothing is swapped before that human answers.

Everything is real, as in test_e2e_pipeline.py: Airflow 3 runs the repo's DAGs, MLflow holds the registry,
Triton serves; the metrics are read from the plugin's ``GET /pitcrew/metrics`` on the Airflow API server.
One stack for the module; each test uses models of its own, bootstrapped inside the test, so neither
depends on the other having run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from monitoring.inference_log import read_inference_log
from pitcrew import registry
from pitcrew.airflow_api import AirflowApi
from pitcrew.demo import send, write_demo_data
from pitcrew.models_file import ModelEntry, load_models_file
from pitcrew.pipeline.bootstrap import bootstrap
from pitcrew.serving.client import TritonControl
from pitcrew.settings import Settings
from pitcrew.stack.components import airflow_password
from tests.stack_fixtures import make_settings, running_stack
from training.tiny import build_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

LABELS = ["billing", "technical", "account", "shipping"]
RUN_TIMEOUT_S = 600
#: The nightly DAG exists only for a model with a schedule. Airflow (catchup off) still runs the latest
#: past cron point at once when the DAG appears, unless the first point after the DAGs' start date
#: (2026-01-01) is in the future: a leap day's is 2028-02-29, so no scheduled run fires during the tests.
NEVER_DURING_TESTS = "0 0 29 2 *"
#: Models of test 1: never bootstrapped (no champion), and a champion whose traffic got no labels.
NO_CHAMPION, NO_LABELS = "nightly_no_champion", "nightly_no_labels"
#: Model of test 2: a champion and a window of labelled traffic.
LABELLED = "nightly_labelled"
#: The chain after the data step, all skipped when the run ends at prepare_training.
AFTER_PREPARE = ("fine_tune", "evaluate", "compile", "register", "replay", "approval", "hot_swap", "canary",
                 "canary_decision", "promote", "rollback")  # fmt: skip


def _models_file(folder: Path, tiny: Path) -> Path:
    thresholds = {
        "window_hours": 1, "min_window_rows": 50, "approval_timeout_h": 1,
        "max_golden_drop": 0.2, "min_accuracy_gain": -0.05,
    }  # fmt: skip
    entries = [
        {
            "name": name,
            "runtime": "python-onnxruntime",
            "base_model": str(tiny),
            "labels": LABELS,
            "train_data": f"data/{name}/train.parquet",
            "golden_data": f"data/{name}/golden.parquet",
            "inference_log": f"log/{name}",
            "feedback": f"feedback/{name}",
            "schedule": NEVER_DURING_TESTS,
            "max_auto_runs_per_day": 0,
            "approvers": ["approver"],
            "thresholds": thresholds,
        }
        for name in (NO_CHAMPION, NO_LABELS, LABELLED)
    ]
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return path


@dataclass
class Nightly:
    settings: Settings
    admin: AirflowApi
    approver: AirflowApi
    triton: TritonControl
    mlflow: MlflowClient

    def entry(self, model: str) -> ModelEntry:
        return load_models_file(self.settings.models_file).get(model)

    def champion_with_traffic(self, model: str, *, labelled: bool) -> dict:
        """Version 1 serving, then a window of domain-B traffic, with its true labels or without."""
        entry = self.entry(model)
        data = write_demo_data(entry, n_train=400, n_golden=32)
        result = bootstrap(entry, self.settings, epochs=4)
        assert result["version"] == 1 and result["serving_version"] == 1
        started = dt.datetime.now(dt.UTC)
        sent = send(
            self.triton,
            model,
            data["traffic_b"].iloc[:320],
            feedback_root=entry.feedback if labelled else None,
        )
        assert sent.failed == 0 and sent.versions == {"1"}
        # Triton flushes the inference log every few seconds: a run must not read the window before that.
        deadline = time.monotonic() + 60
        while (
            len(read_inference_log(entry.inference_log, started, dt.datetime.now(dt.UTC), model=model))
            < sent.sent
        ):
            assert time.monotonic() < deadline, (
                f"{model}: the inference log did not get the {sent.sent} rows sent"
            )
            time.sleep(0.5)
        return data

    def trigger(self, model: str) -> tuple[str, str]:
        dag_id = f"pitcrew_nightly_retrain_{model}"
        self.admin.wait_for_dag(dag_id)
        return dag_id, self.admin.trigger(dag_id, {"model": model, "trigger": "manual"})

    def assert_run_ends(self, dag_id: str, run_id: str, expected: str) -> dict[str, str | None]:
        """Wait for the run to end as ``expected``; otherwise say how each task ended. Returns the states."""
        state = self.admin.wait_for_run(dag_id, run_id, RUN_TIMEOUT_S)
        states = self.admin.task_states(dag_id, run_id)
        assert state == expected, (
            f"run {run_id} ended {state!r}, not {expected!r}; tasks: {states}; "
            f"scheduler log: {self.settings.home_dir / 'logs' / 'airflow-scheduler.log'}"
        )
        return states

    def runs_total(self, model: str) -> dict[str, float]:
        """``pitcrew_pipeline_runs_total{model}`` by outcome, as the plugin on the API server serves it."""
        response = httpx.get(f"{self.settings.airflow_url}/pitcrew/metrics", timeout=30)
        assert response.status_code == 200, response.text
        return {
            sample.labels["outcome"]: sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == "pitcrew_pipeline_runs_total" and sample.labels.get("model") == model
        }


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nightly]:
    root = tmp_path_factory.mktemp("nightly")
    tiny = build_tiny_model(root / "tiny-base", LABELS, hidden_size=32, layers=2)
    settings = make_settings(root / "home", models_file=_models_file(root, tiny), airflow_parallelism=2)
    with running_stack(settings):
        yield Nightly(
            settings=settings,
            admin=AirflowApi(settings.airflow_url, "admin", airflow_password(settings, "admin")),
            approver=AirflowApi(settings.airflow_url, "approver", airflow_password(settings, "approver")),
            triton=TritonControl(settings.triton_http_url),
            mlflow=MlflowClient(tracking_uri=settings.mlflow_url, registry_uri=settings.mlflow_url),
        )


def test_a_night_with_nothing_to_learn_ends_green_as_nothing_to_do(nightly: Nightly) -> None:
    # No champion at all: started first, it runs while the other model's champion is built.
    runs = {NO_CHAMPION: nightly.trigger(NO_CHAMPION)}
    nightly.champion_with_traffic(NO_LABELS, labelled=False)
    runs[NO_LABELS] = nightly.trigger(NO_LABELS)
    expected_reason = {NO_CHAMPION: "has no champion yet", NO_LABELS: "not enough feedback to fine-tune"}

    for model, (dag_id, run_id) in runs.items():
        states = nightly.assert_run_ends(dag_id, run_id, "success")
        assert states["data_quality"] == "success" and states["record_outcome"] == "success", (model, states)
        assert states["prepare_training"] == "skipped", (model, states)
        for task_id in AFTER_PREPARE:
            assert states[task_id] == "skipped", (model, task_id, states)
        # The step declared the outcome and why; the run's record carries both.
        assert (
            nightly.admin.xcom_value(dag_id, run_id, "prepare_training", "pitcrew_outcome") == "nothing_to_do"
        )
        outcome = nightly.admin.xcom_value(dag_id, run_id, "record_outcome")
        assert outcome["outcome"] == "nothing_to_do", (model, outcome)
        assert expected_reason[model] in outcome["reason"], (model, outcome)
        # Counted once, as a success: this run is the DAG's only one (no scheduled run fired).
        assert [run["dag_run_id"] for run in nightly.admin.dag_runs(dag_id)] == [run_id]
        totals = nightly.runs_total(model)
        assert totals["nothing_to_do"] == 1, (model, totals)
        assert sum(totals.values()) == 1, (model, totals)

    window = nightly.admin.xcom_value(*runs[NO_LABELS], "data_quality", "window")
    assert window["rows"] >= 320 and window["labelled"] == 0, window
    assert {p.version for p in nightly.triton.classify(NO_LABELS, ["my invoice is wrong"])} == {"1"}


def test_a_night_with_new_labels_waits_for_approval_and_swaps_nothing(nightly: Nightly) -> None:
    model = LABELLED
    nightly.champion_with_traffic(model, labelled=True)
    dag_id, run_id = nightly.trigger(model)
    nightly.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)

    states = nightly.admin.task_states(dag_id, run_id)
    for task_id in (
        "data_quality",
        "prepare_training",
        "fine_tune",
        "evaluate",
        "compile",
        "register",
        "replay",
    ):
        assert states[task_id] == "success", (task_id, states)
    assert states["hot_swap"] is None and states["record_outcome"] is None, states
    window = nightly.admin.xcom_value(dag_id, run_id, "data_quality", "window")
    assert window["labelled"] >= 300, window
    detail = nightly.admin.tasks.get_hitl_detail(dag_id, run_id, "approval", -1)
    assert "accuracy, new traffic hold-out" in detail.body
    # Registered as version 2 with its lineage, but not the champion, and Triton still serves version 1.
    assert nightly.admin.xcom_value(dag_id, run_id, "register", "version") == 2
    tags = registry.get_version(nightly.mlflow, model, 2).tags
    assert tags["airflow_dag_run_id"] == run_id and tags["parent_version"] == "1"
    assert registry.alias_version(nightly.mlflow, model, registry.CHAMPION) == 1
    assert nightly.triton.ready_versions(model) == [1]
    assert {p.version for p in nightly.triton.classify(model, ["where is my parcel"])} == {"1"}

    # A human rejects: the run ends green as rejected_by_human, still nothing swapped.
    nightly.approver.respond(dag_id, run_id, "approval", "Reject")
    states = nightly.assert_run_ends(dag_id, run_id, "success")
    for task_id in ("hot_swap", "canary", "canary_decision", "promote", "rollback"):
        assert states[task_id] == "skipped", (task_id, states)
    assert nightly.admin.xcom_value(dag_id, run_id, "record_outcome")["outcome"] == "rejected_by_human"
    totals = nightly.runs_total(model)
    assert totals["rejected_by_human"] == 1 and sum(totals.values()) == 1, totals
    assert registry.alias_version(nightly.mlflow, model, registry.CHAMPION) == 1
    assert nightly.triton.ready_versions(model) == [1]
