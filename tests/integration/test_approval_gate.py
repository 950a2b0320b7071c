"""The approval gate end to end on the real stack: it cannot be stepped around, and it tells the truth.

- Airflow refuses an answer from an Op user who is not in the model's ``approvers`` (HTTP 403), and when
  an admin marks the approval task successful by hand instead, ``hot_swap`` reads the answer Airflow
  recorded, finds none, and fails with that reason: Triton and the MLflow aliases stay as they were.
- An alert starts a run; a second alert about the same model while it is in flight attaches to it (one
  incident, one run). The approval request links only pages the stack serves (no ``file://``), says
  why the run exists, and a listed approver's Reject is recorded in the metrics and on the version.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from pitcrew import registry
from pitcrew.airflow_api import AirflowApiError
from pitcrew.alerts.client import alert_entry, alertmanager_body, auth_headers
from pitcrew.stack.components import webhook_token
from tests.pipeline_world import RUN_TIMEOUT_S, PipelineWorld, pipeline_world

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BY_HAND, BY_ALERT = "gate_by_hand", "gate_by_alert"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineWorld]:
    # Alerts may start runs (cap 3 a day); the cooldown holds the incident for an hour.
    with pipeline_world(tmp_path_factory.mktemp("gate"), [BY_HAND, BY_ALERT], max_auto_runs_per_day=3) as w:
        yield w


def test_an_approval_marked_successful_by_hand_swaps_nothing(world: PipelineWorld) -> None:
    world.champion_with_traffic(BY_HAND, labelled=True)
    dag_id, run_id = world.trigger(BY_HAND)
    world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)

    # An Op who is not one of the model's approvers may not answer: Airflow's own check.
    with pytest.raises(AirflowApiError, match="HTTP 403"):
        world.user("operator").respond(dag_id, run_id, "approval", "Approve")

    # Someone who may edit task states marks the approval successful instead: no answer is recorded.
    world.admin.set_task_state(dag_id, run_id, "approval", "success")
    states = world.assert_run_ends(dag_id, run_id, "failed")
    assert states["hot_swap"] == "failed", states
    log = world.admin.task_log(dag_id, run_id, "hot_swap")
    assert "refusing to swap" in log and "marked successful by hand" in log, log[-2000:]
    assert world.triton.ready_versions(BY_HAND) == [1]
    assert registry.alias_version(world.mlflow, BY_HAND, registry.CHAMPION) == 1
    assert world.runs_total(BY_HAND)["failed"] == 1  # record_outcome counted it (and failed the run on purpose)


def _post_alert(world: PipelineWorld, name: str, model: str) -> dict:
    body = alertmanager_body([alert_entry({"alertname": name, "model": model, "severity": "warning"})])
    response = httpx.post(f"{world.settings.airflow_url}/pitcrew/alerts", content=body,
                          headers=auth_headers(body, webhook_token(world.settings)), timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


def test_one_incident_one_run_with_links_people_can_open_and_a_recorded_rejection(world: PipelineWorld) -> None:
    model = BY_ALERT
    world.champion_with_traffic(model, labelled=True)
    dag_id = f"pitcrew_maintenance_{model}"
    world.admin.wait_for_dag(dag_id)
    # Measured accuracy low: its route retrains on the labels without a drift test.
    first = _post_alert(world, "ModelAccuracyLow", model)
    (run_id,) = first["run_ids"]
    assert first["alerts"][0]["decision"] == "triggered"
    # Another alert about the same model while that run is in flight joins the incident.
    second = _post_alert(world, "ModelLowConfidence", model)
    assert (second["alerts"][0]["decision"], second["run_ids"]) == ("attached", [])
    assert [run["dag_run_id"] for run in world.admin.dag_runs(dag_id)] == [run_id]
    assert "Started by alert ModelAccuracyLow" in (world.admin.dag_run(dag_id, run_id).get("note") or "")

    world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
    body = world.admin.hitl_detail(dag_id, run_id, "approval")["body"]
    assert "file://" not in body
    assert "**Why this run:** alert `ModelAccuracyLow`" in body
    links = dict(re.findall(r"\[([^\]]+)\]\((https?://[^)]+)\)", body))
    assert {"MLflow version", "Airflow run", "replay details"} <= set(links), links
    for name, url in links.items():
        answer = httpx.get(url, timeout=30, follow_redirects=True)
        assert answer.status_code == 200, (name, url, answer.status_code)
    assert '"agreement"' in httpx.get(links["replay details"], timeout=30).text

    world.approver.respond(dag_id, run_id, "approval", "Reject")
    world.assert_run_ends(dag_id, run_id, "success")
    assert world.admin.xcom_value(dag_id, run_id, "record_outcome")["outcome"] == "rejected_by_human"
    assert world.runs_total(model)["rejected_by_human"] == 1
    tags = registry.get_version(world.mlflow, model, 2).tags
    assert (tags["rejected_by"], tags["airflow_dag_run_id"]) == ("approver", run_id), tags
    assert world.triton.ready_versions(model) == [1]
