"""A real local stack with the tiny model, for end-to-end tests of whole runs (nightly, approvals).

Shared by several test modules (each starts its own stack through :func:`pipeline_world`): models are
declared per module, bootstrapped inside each test, so no test depends on another having run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from monitoring.inference_log import read_inference_log
from pitcrew.airflow_api import AirflowApi
from pitcrew.demo import send, write_demo_data
from pitcrew.models_file import ModelEntry, load_models_file
from pitcrew.pipeline.bootstrap import bootstrap
from pitcrew.serving.client import TritonControl
from pitcrew.settings import Settings
from pitcrew.stack.components import airflow_password
from tests.stack_fixtures import make_settings, running_stack
from training.tiny import build_tiny_model

LABELS = ["billing", "technical", "account", "shipping"]
RUN_TIMEOUT_S = 600
#: The nightly DAG exists only for a model with a schedule. Airflow (catchup off) still runs the latest
#: past cron point at once when the DAG appears, unless the first point after the DAGs' start date
#: (2026-01-01) is in the future: a leap day's is 2028-02-29, so no scheduled run fires during the tests.
NEVER_DURING_TESTS = "0 0 29 2 *"


def wait_for_logged(entry: ModelEntry, since: dt.datetime, count: int, timeout_s: float = 60) -> None:
    """Wait until ``entry``'s inference log holds ``count`` rows of its model since ``since``.

    Triton flushes the inference log every few seconds: a run started before that flush would read an
    empty window (the distributed profile starts its first task within about 2 s).
    """
    deadline = time.monotonic() + timeout_s
    while len(read_inference_log(entry.inference_log, since, dt.datetime.now(dt.UTC), model=entry.name)) < count:
        assert time.monotonic() < deadline, f"{entry.name}: the inference log did not get the {count} rows sent"
        time.sleep(0.5)

def models_file(folder: Path, tiny: Path, names: list[str], **overrides: Any) -> Path:
    """A models file of tiny-model entries named ``names``, with fast thresholds; ``overrides`` win."""
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
            **overrides,
        }
        for name in names
    ]
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return path


@dataclass
class PipelineWorld:
    settings: Settings
    admin: AirflowApi
    approver: AirflowApi
    triton: TritonControl
    mlflow: MlflowClient

    def entry(self, model: str) -> ModelEntry:
        return load_models_file(self.settings.models_file).get(model)

    def champion_with_traffic(
        self, model: str, *, labelled: bool, relabel: dict[str, str] | None = None
    ) -> dict:
        """Version 1 serving, then a window of domain-B traffic, with its true labels or without.

        ``relabel`` maps true labels to the ones sent as feedback instead (labels flipped for a class).
        """
        entry = self.entry(model)
        data = write_demo_data(entry, n_train=400, n_golden=32)
        result = bootstrap(entry, self.settings, epochs=4)
        assert result["version"] == 1 and result["serving_version"] == 1
        started = dt.datetime.now(dt.UTC)
        window = data["traffic_b"].iloc[:320]
        sent = send(
            self.triton,
            model,
            window.assign(label=window["label"].replace(relabel or {})),
            feedback_root=entry.feedback if labelled else None,
        )
        assert sent.failed == 0 and sent.versions == {"1"}
        wait_for_logged(entry, started, sent.sent)
        return data

    def trigger(self, model: str) -> tuple[str, str]:
        """A nightly retrain run of ``model``, started by hand."""
        dag_id = f"pitcrew_nightly_retrain_{model}"
        self.admin.wait_for_dag(dag_id)
        return dag_id, self.admin.trigger(dag_id, {"model": model, "trigger": "manual"})

    def user(self, name: str) -> AirflowApi:
        """A REST client logged in as one of the local stack's users."""
        return AirflowApi(self.settings.airflow_url, name, airflow_password(self.settings, name))

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


class World:
    """The stack of test_e2e_pipeline and test_distributed_e2e: clients for each service and user, and the
    demo data of each model once :meth:`prepare` bootstrapped it."""

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
        wait_for_logged(entry, started, sent.sent)

    def run(self, model: str, conf: dict | None = None) -> str:
        dag_id = f"pitcrew_maintenance_{model}"
        self.admin.wait_for_dag(dag_id)
        return self.admin.trigger(dag_id, {"model": model, "trigger": "manual", **(conf or {})})


@contextmanager
def pipeline_world(root: Path, names: list[str], **overrides: Any) -> Iterator[PipelineWorld]:
    """The whole local stack (embedded profile) with a models file of ``names``; always brought down."""
    tiny = build_tiny_model(root / "tiny-base", LABELS, hidden_size=32, layers=2)
    settings = make_settings(root / "home", models_file=models_file(root, tiny, names, **overrides),
                             airflow_parallelism=2)  # fmt: skip
    with running_stack(settings):
        yield PipelineWorld(
            settings=settings,
            admin=AirflowApi(settings.airflow_url, "admin", airflow_password(settings, "admin")),
            approver=AirflowApi(settings.airflow_url, "approver", airflow_password(settings, "approver")),
            triton=TritonControl(settings.triton_http_url),
            mlflow=MlflowClient(tracking_uri=settings.mlflow_url, registry_uri=settings.mlflow_url),
        )
