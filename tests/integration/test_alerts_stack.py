"""The alert path on the real stack: Prometheus rule → Alertmanager → plugin webhook → one Airflow run.

One module-scoped private stack (Airflow, Alertmanager, Prometheus on free ports) with a fast copy of
``deploy/`` and a stand-in maintenance DAG (see tests/alert_stack.py). The tests share the stack, so each
counts only what it adds (runs, decision counters), never what other tests left: they run in any order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from pitcrew.airflow_api import AirflowApi
from pitcrew.alerts.client import alert_entry, alertmanager_body, auth_headers
from pitcrew.alerts.fingerprint import labels_fingerprint
from pitcrew.demo import write_fast_deploy
from pitcrew.settings import REPO_ROOT, Settings
from pitcrew.stack.components import airflow_admin_password, grafana_token, webhook_hmac_secret, webhook_token
from tests.alert_stack import GRAFANA_EXAMPLE, write_dags_folder, write_models_file
from tests.stack_fixtures import make_settings, running_stack

pytestmark = pytest.mark.integration

DAG_ID = "pitcrew_maintenance_textclf"


@dataclass
class AlertStack:
    settings: Settings
    api: AirflowApi
    token: str  # Alertmanager's
    secret: str
    grafana_token: str

    @property
    def webhook(self) -> str:
        return f"{self.settings.airflow_url}/pitcrew/alerts"

    def post(
        self, body: bytes, *, signed: bool = False, headers: dict[str, str] | None = None, token: str | None = None
    ) -> httpx.Response:
        token = self.token if token is None else token
        hdrs = headers if headers is not None else auth_headers(body, token, self.secret if signed else None)
        return httpx.post(self.webhook, content=body, headers=hdrs, timeout=30)

    def runs(self) -> list[dict]:
        return self.api.dag_runs(DAG_ID)

    def run_ids(self) -> set[str]:
        return {r["dag_run_id"] for r in self.runs()}

    def alerts_total(self, decision: str, source: str = "alertmanager", model: str = "textclf") -> float:
        """``pitcrew_alerts_total{source, model, decision}`` as the plugin's /pitcrew/metrics serves it now."""
        scrape = httpx.get(f"{self.settings.airflow_url}/pitcrew/metrics", timeout=30).text
        wanted = {"source": source, "model": model, "decision": decision}
        return sum(
            sample.value
            for family in text_string_to_metric_families(scrape)
            for sample in family.samples
            if sample.name == "pitcrew_alerts_total" and sample.labels == wanted
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertStack]:
    root = tmp_path_factory.mktemp("alertstack")
    settings = make_settings(
        root / "home",
        dags_folder=write_dags_folder(root / "dags"),
        plugins_folder=REPO_ROOT / "plugins",
        deploy_dir=write_fast_deploy(root / "deploy"),
        models_file=write_models_file(root / "models.yaml", max_auto_runs_per_day=50),
    )
    with running_stack(settings, only=("airflow", "alertmanager", "prometheus")):
        api = AirflowApi(settings.airflow_url, "admin", airflow_admin_password(settings))
        api.wait_for_dag(DAG_ID)
        yield AlertStack(settings, api, webhook_token(settings), webhook_hmac_secret(settings), grafana_token(settings))


def _wait(predicate, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def test_health_and_airflow_auth_unchanged(stack: AlertStack) -> None:
    assert httpx.get(f"{stack.settings.airflow_url}/pitcrew/health").json() == {"status": "ok"}
    # The plugin does not open Airflow's API: no token, no DAG list.
    assert httpx.get(f"{stack.settings.airflow_url}/api/v2/dags").status_code == 401


def test_prometheus_rule_fires_through_alertmanager_and_queues_one_run(stack: AlertStack) -> None:
    """Done-when: real rule on a real scraped metric → real Alertmanager → plugin → exactly one run."""
    before = stack.run_ids()
    triggered, cooldown = stack.alerts_total("triggered"), stack.alerts_total("cooldown")
    metrics_dir = stack.settings.home_dir / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    (metrics_dir / "drift.prom").write_text(
        "# HELP pitcrew_drift_effect_size Effect size of the drift test of one input column.\n"
        "# TYPE pitcrew_drift_effect_size gauge\n"
        'pitcrew_drift_effect_size{model="textclf",column="text_length"} 0.9\n'
    )

    def new_runs() -> list[dict]:
        return [r for r in stack.runs() if r["dag_run_id"] not in before]

    _wait(new_runs, 120, "the maintenance run queued by the alert")
    # Alertmanager re-sends the firing group (repeat_interval 2s in the fast copy, later on a busy machine):
    # wait for a re-send to reach the webhook; the cooldown holds it, so still one run.
    _wait(lambda: stack.alerts_total("cooldown") > cooldown, 90, "Alertmanager's re-send of the alert")
    runs = new_runs()
    assert len(runs) == 1, runs
    conf = runs[0]["conf"]
    assert conf["model"] == "textclf" and conf["trigger"] == "alert"
    alert = conf["alert"]
    assert alert["name"] == "ModelDriftScoreHigh"
    assert alert["source"] == "alertmanager"
    assert alert["labels"] == {"alertname": "ModelDriftScoreHigh", "model": "textclf", "severity": "warning"}
    # Our fingerprint algorithm agrees with the real Alertmanager's (the poller relies on it).
    assert alert["fingerprint"] == labels_fingerprint(alert["labels"])
    assert runs[0]["dag_run_id"].startswith(f"alert__textclf__{alert['fingerprint']}__")
    assert runs[0]["triggering_user_name"] == "pitcrew-webhook"
    # The pipeline metric reached Prometheus through the plugin's /pitcrew/metrics (job "pitcrew").
    query = httpx.get(f"{stack.settings.prometheus_url}/api/v1/query", params={"query": "pitcrew_drift_effect_size"})
    (series,) = query.json()["data"]["result"]
    assert series["metric"]["job"] == "pitcrew" and float(series["value"][1]) == 0.9
    assert stack.alerts_total("triggered") == triggered + 1
    (metrics_dir / "drift.prom").unlink()


def test_grafana_documented_example_is_accepted(stack: AlertStack) -> None:
    body = json.dumps(GRAFANA_EXAMPLE).encode()
    response = stack.post(body, signed=True, token=stack.grafana_token)
    assert response.status_code == 200, response.text
    assert response.json()["format"] == "grafana"
    assert stack.post(body, signed=False, token=stack.grafana_token).status_code == 401


def test_each_token_sends_its_own_senders_format_only(stack: AlertStack) -> None:
    """The plugin's tokens come from the pitcrew_webhook connection `pitcrew airflow-init` wrote."""
    assert stack.grafana_token != stack.token
    grafana = json.dumps(GRAFANA_EXAMPLE).encode()
    refused = stack.post(grafana, signed=True)  # Alertmanager's token, even with a valid signature
    assert refused.status_code == 401 and "needs Grafana's token" in refused.json()["error"]
    alertmanager = alertmanager_body([alert_entry({"alertname": "Unrouted", "case": "tokens"})])
    assert stack.post(alertmanager, token=stack.grafana_token).status_code == 401
    assert stack.post(alertmanager, signed=True, token=stack.grafana_token).status_code == 401
    assert stack.post(alertmanager).status_code == 200


def test_timezone_less_alert_time_is_400(stack: AlertStack) -> None:
    data = json.loads(alertmanager_body([alert_entry({"alertname": "Unrouted", "case": "naive"})]))
    data["alerts"][0]["startsAt"] = "2026-03-01T12:00:00"
    response = stack.post(json.dumps(data).encode())
    assert response.status_code == 400
    assert "alerts.0.startsAt" in response.json()["error"] and "timezone" in response.json()["error"]


def test_hundred_concurrent_posts_start_exactly_one_run(stack: AlertStack) -> None:
    before = stack.run_ids()
    body = alertmanager_body([alert_entry({"alertname": "TritonInferenceFailures", "model": "textclf",
                                           "case": "concurrent"})])  # fmt: skip
    with ThreadPoolExecutor(max_workers=100) as pool:
        responses = list(pool.map(lambda _: stack.post(body), range(100)))
    statuses = [r.status_code for r in responses]
    assert all(s in (200, 503) for s in statuses), statuses
    named = {rid for r in responses if r.status_code == 200 for rid in r.json()["run_ids"]}
    new = stack.run_ids() - before
    assert len(new) == 1 and named == new


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, b"{}", 401),
        ({"Authorization": "Bearer wrong"}, b"{}", 401),
        (None, b"not json", 400),
        (None, json.dumps({"version": "9", "alerts": []}).encode(), 422),
    ],
)
def test_bad_requests_create_no_run(stack: AlertStack, headers, body: bytes, status: int) -> None:
    before = stack.run_ids()
    assert stack.post(body, headers=headers).status_code == status
    assert stack.run_ids() == before


def test_oversized_body_is_413(stack: AlertStack) -> None:
    body = b"{" + b" " * (2 << 20) + b"}"
    assert stack.post(body).status_code == 413


_FUZZ_BODIES = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["version", "orgId", "status", "alerts", "receiver"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=3)),
                    max_size=5).map(lambda d: json.dumps(d).encode()),
)  # fmt: skip


def test_fuzz_real_plugin_no_5xx_no_run(stack: AlertStack) -> None:
    """300 malformed signed bodies: each is refused (no 5xx), and none of them queued a run."""
    before = stack.run_ids()

    @settings(max_examples=300, deadline=None)
    @given(body=_FUZZ_BODIES)
    def post(body: bytes) -> None:
        response = stack.post(body, signed=True)
        assert response.status_code in (400, 401, 422), response.text

    post()
    assert stack.run_ids() == before


def test_locked_airflow_database_loses_no_alert(stack: AlertStack) -> None:
    """Hold an exclusive lock on Airflow's SQLite database while an alert arrives: the webhook either
    waits it out (200 with a run) or answers 503 so the sender retries; either way one run results."""
    import sqlite3
    import threading

    db = stack.settings.home_dir / "airflow" / "airflow.db"
    locked = threading.Event()

    def hold_lock() -> None:
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(8)
        conn.execute("ROLLBACK")
        conn.close()

    before = stack.run_ids()
    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert locked.wait(30)
    body = alertmanager_body([alert_entry({"alertname": "TritonInferenceFailures", "model": "textclf",
                                           "case": "locked"})])  # fmt: skip
    first = stack.post(body)
    holder.join()
    assert first.status_code in (200, 503), first.text
    responses = [first]
    if first.status_code == 503:
        assert first.headers["retry-after"]
        responses.append(stack.post(body))  # what Alertmanager does on a 5xx
        assert responses[-1].status_code == 200
    named = [rid for r in responses if r.status_code == 200 for rid in r.json()["run_ids"]]
    assert len(named) == 1
    assert stack.run_ids() - before == set(named)
