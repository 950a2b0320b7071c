"""The poller on the real stack: Prometheus (rules firing on a metric the plugin serves) and Airflow
running the real ``pitcrew_watch`` DAG, without Alertmanager, so any run it starts came from polling.
Also the Prometheus hook and the PromQL trigger against the real Prometheus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from airflow.sdk import Connection

from operators.prometheus_hook import PrometheusHook
from operators.promql_trigger import PromQLTrigger
from pitcrew.airflow_api import AirflowApi
from pitcrew.alerts.fingerprint import labels_fingerprint
from pitcrew.demo import write_fast_deploy
from pitcrew.settings import REPO_ROOT, Settings
from pitcrew.stack.components import airflow_admin_password
from tests.alert_stack import write_dags_folder, write_models_file
from tests.stack_fixtures import make_settings, running_stack

pytestmark = pytest.mark.integration

MAINTENANCE = "pitcrew_maintenance_textclf"
DRIFT = (
    "# HELP pitcrew_drift_effect_size Effect size of the drift test of one input column.\n"
    "# TYPE pitcrew_drift_effect_size gauge\n"
    'pitcrew_drift_effect_size{model="textclf",column="text_length"} 0.8\n'
)


@dataclass
class WatchStack:
    settings: Settings
    api: AirflowApi


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WatchStack]:
    root = tmp_path_factory.mktemp("watchstack")
    settings = make_settings(
        root / "home",
        dags_folder=write_dags_folder(root / "dags", extra=(REPO_ROOT / "dags" / "pitcrew_watch.py",)),
        plugins_folder=REPO_ROOT / "plugins",
        deploy_dir=write_fast_deploy(root / "deploy"),
        models_file=write_models_file(root / "models.yaml", max_auto_runs_per_day=10),
    )
    (settings.home_dir / "metrics").mkdir(parents=True, exist_ok=True)
    (settings.home_dir / "metrics" / "drift.prom").write_text(DRIFT)
    with running_stack(settings, only=("airflow", "prometheus")):
        api = AirflowApi(settings.airflow_url, "admin", airflow_admin_password(settings))
        api.wait_for_dag(MAINTENANCE)
        api.wait_for_dag("pitcrew_watch")
        yield WatchStack(settings, api)


def _hook(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> PrometheusHook:
    conn = Connection(conn_id="prom", conn_type="prometheus", host=settings.host, port=settings.prometheus_port)
    monkeypatch.setattr(PrometheusHook, "get_connection", classmethod(lambda cls, conn_id: conn))
    return PrometheusHook("prom")


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def test_hook_reads_firing_alerts_with_alertmanager_fingerprint(stack: WatchStack, monkeypatch) -> None:
    hook = _hook(monkeypatch, stack.settings)
    assert hook.test_connection()[0]
    alerts = _wait(lambda: [a for a in hook.firing_alerts() if a["labels"]["alertname"] == "ModelDriftScoreHigh"],
                   90, "ModelDriftScoreHigh to fire")  # fmt: skip
    (alert,) = alerts
    assert alert["labels"] == {"alertname": "ModelDriftScoreHigh", "model": "textclf", "severity": "warning"}
    assert alert["active_at"] is not None and alert["active_at"] <= time.time()
    assert len(labels_fingerprint(alert["labels"])) == 16


def test_promql_trigger_on_real_prometheus(stack: WatchStack) -> None:
    async def first_event(query: str, timeout_s: float) -> dict:
        trigger = PromQLTrigger(stack.settings.prometheus_url, query, poll_interval_s=0.5, timeout_s=timeout_s)
        async for event in trigger.run():
            return event.payload
        raise AssertionError("trigger yielded nothing")

    met = asyncio.run(first_event("max by (model) (pitcrew_drift_effect_size) > 0.3", 60))
    assert met["status"] == "success" and met["result"][0]["metric"] == {"model": "textclf"}
    assert asyncio.run(first_event("max by (model) (pitcrew_drift_effect_size) > 2", 2))["status"] == "timeout"
    assert asyncio.run(first_event("max by (", 5))["status"] == "error"


def test_watch_dag_starts_one_maintenance_run_from_polling(stack: WatchStack) -> None:
    prometheus = stack.settings.prometheus_url
    _wait(lambda: httpx.get(f"{prometheus}/api/v1/query", params={"query": 'ALERTS{alertstate="firing"}'})
          .json()["data"]["result"], 90, "a firing alert in Prometheus")  # fmt: skip
    for _ in range(2):  # a second poll finds the same alert: cooldown, no second run
        run_id = stack.api.trigger("pitcrew_watch", {})
        state = stack.api.wait_for_run("pitcrew_watch", run_id, timeout_s=180)
        assert state == "success"
    runs = stack.api.dag_runs(MAINTENANCE)
    assert len(runs) == 1, runs
    assert runs[0]["conf"]["trigger"] == "watch"
    alert = runs[0]["conf"]["alert"]
    assert alert["source"] == "pitcrew_watch"
    assert alert["name"] == "ModelDriftScoreHigh"
    assert alert["fingerprint"] == labels_fingerprint(alert["labels"])
