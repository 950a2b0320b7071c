"""The webhook against the real ``pitcrew_maintenance_<model>`` DAG (repo ``dags/``), paused so the run stays
queued and no pipeline task executes: the run is created with the conf the real DAG validates."""

from __future__ import annotations

import httpx
import pytest

from pitcrew.airflow_api import AirflowApi
from pitcrew.alerts.client import alert_entry, alertmanager_body, auth_headers
from pitcrew.settings import REPO_ROOT
from pitcrew.stack.components import airflow_admin_password, webhook_token
from tests.stack_fixtures import make_settings, running_stack

pytestmark = pytest.mark.integration

DAG_ID = "pitcrew_maintenance_textclf"


def test_alert_queues_a_run_of_the_real_maintenance_dag(tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = make_settings(
        tmp_path_factory.mktemp("realdag"), dags_folder=REPO_ROOT / "dags", plugins_folder=REPO_ROOT / "plugins"
    )
    with running_stack(settings, only=("airflow",)):
        api = AirflowApi(settings.airflow_url, "admin", airflow_admin_password(settings))
        api.wait_for_dag(DAG_ID, timeout_s=180)
        api.set_paused(DAG_ID, True)  # runs stay queued: no pipeline task executes in this test
        labels = {"alertname": "TritonInferenceFailures", "model": "textclf", "severity": "warning"}
        body = alertmanager_body([alert_entry(labels)])
        token = webhook_token(settings)
        response = httpx.post(f"{settings.airflow_url}/pitcrew/alerts", content=body,
                              headers=auth_headers(body, token), timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
        (run_id,) = response.json()["run_ids"]
        run = api.dag_run(DAG_ID, run_id)
        assert run["state"] == "queued"
        assert run["conf"]["trigger"] == "alert" and run["conf"]["model"] == "textclf"
        assert {"name", "fingerprint", "starts_at"} <= set(run["conf"]["alert"])
