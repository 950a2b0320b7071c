from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import requests
from fastapi.testclient import TestClient

from operators.watch_operators import AlertWebhookOperator, PrometheusFindingsOperator
from pitcrew.alerts.client import alert_entry, alertmanager_body, auth_headers
from pitcrew.alerts.errors import TriggerUnavailable
from pitcrew.alerts.fingerprint import labels_fingerprint
from pitcrew.alerts.payloads import WATCH_RECEIVER
from pitcrew.alerts.routing import PolledQuery
from pitcrew.alerts.watch import (
    WatchForwardError,
    WebhookUnavailableError,
    entries_from_alerts,
    entries_from_query,
    forward,
    merge_findings,
)
from pitcrew.settings import REPO_ROOT
from tests.unit.conftest import TOKEN, RecordingTrigger, _make
from tests.unit.operator_context import context_for, in_dag

LABELS = {"alertname": "TritonInferenceFailures", "model": "textclf", "severity": "warning"}


class TestEntries:
    def test_firing_alerts_keep_alertmanager_fingerprint_and_activation(self) -> None:
        (entry,) = entries_from_alerts([{"labels": LABELS, "active_at": 1_800_000_000.0}])
        assert entry["fingerprint"] == labels_fingerprint(LABELS)
        assert entry["labels"] == LABELS
        assert entry["startsAt"] == datetime.fromtimestamp(1_800_000_000, UTC).isoformat()
        assert entry["status"] == "firing"

    def test_query_samples_become_named_alerts(self) -> None:
        query = PolledQuery(name="PitcrewErrorRatioHigh", expr="x > 0.01", labels={"severity": "warning"})
        samples = [{"metric": {"__name__": "x", "model": "textclf"}, "value": [0, "0.2"]}]
        (entry,) = entries_from_query(query, samples)
        assert entry["labels"] == {
            "alertname": "PitcrewErrorRatioHigh",
            "model": "textclf",
            "severity": "warning",
        }
        assert entry["annotations"] == {"expr": "x > 0.01", "value": "0.2"}
        assert entry["fingerprint"] == labels_fingerprint(entry["labels"])

    def test_merge_drops_breaches_of_models_with_a_firing_alert(self) -> None:
        alerts = entries_from_alerts([{"labels": LABELS, "active_at": None}])
        query = PolledQuery(name="PitcrewDriftScoreHigh", expr="d > 0.3")
        breaches = entries_from_query(
            query,
            [
                {"metric": {"model": "textclf"}, "value": [0, "1"]},
                {"metric": {"model": "other"}, "value": [0, "1"]},
            ],
        )
        merged = merge_findings(alerts, breaches)
        assert [(e["labels"]["alertname"], e["labels"]["model"]) for e in merged] == [
            ("TritonInferenceFailures", "textclf"),
            ("PitcrewDriftScoreHigh", "other"),
        ]


def _poster(client: TestClient, token: str = TOKEN):
    """Post through the real webhook app, as the operator's HttpHook does; records each body."""
    bodies: list[bytes] = []

    def post(body: bytes) -> httpx.Response:
        bodies.append(body)
        return client.post("/alerts", content=body, headers=auth_headers(body, token))

    post.bodies = bodies  # type: ignore[attr-defined]
    return post


class TestForward:
    @pytest.fixture
    def webhook(self, tmp_path: Path) -> tuple[TestClient, RecordingTrigger]:
        trigger = RecordingTrigger()
        app, _ = _make(tmp_path, trigger)
        return TestClient(app, raise_server_exceptions=False), trigger

    def test_polled_alert_shares_policy_with_alertmanager(self, webhook) -> None:
        client, trigger = webhook
        pushed = alertmanager_body([alert_entry(LABELS)])
        assert client.post("/alerts", content=pushed, headers=auth_headers(pushed, TOKEN)).status_code == 200
        # The poller sees the same alert in ALERTS: same fingerprint, so cooldown, no second run.
        outcomes = forward(entries_from_alerts([{"labels": LABELS, "active_at": None}]), _poster(client))
        assert [o["decision"] for o in outcomes] == ["cooldown"]
        assert len(trigger.calls) == 1

    def test_query_breach_starts_a_run_marked_as_polled(self, webhook) -> None:
        client, trigger = webhook
        query = PolledQuery(name="PitcrewDriftScoreHigh", expr="d > 0.3")
        entries = entries_from_query(query, [{"metric": {"model": "textclf"}, "value": [0, "0.5"]}])
        post = _poster(client)
        (outcome,) = forward(entries, post)
        assert outcome["decision"] == "triggered"
        ((_, _, conf),) = trigger.calls
        assert conf["alert"]["source"] == "pitcrew_watch" and conf["trigger"] == "watch"
        assert conf["alert"]["name"] == "PitcrewDriftScoreHigh"
        (body,) = post.bodies
        assert json.loads(body)["receiver"] == WATCH_RECEIVER

    def test_batches_of_fifty(self, webhook) -> None:
        client, _ = webhook
        entries = [alert_entry({"alertname": "Unrouted", "n": str(i)}) for i in range(120)]
        post = _poster(client)
        outcomes = forward(entries, post)
        assert len(outcomes) == 120 and {o["decision"] for o in outcomes} == {"unrouted"}
        assert [len(json.loads(b)["alerts"]) for b in post.bodies] == [50, 50, 20]

    def test_nothing_to_forward_posts_nothing(self, webhook) -> None:
        client, _ = webhook
        post = _poster(client)
        assert forward([], post) == [] and post.bodies == []

    def test_refusal_raises_not_retryable(self, webhook) -> None:
        client, _ = webhook
        with pytest.raises(WatchForwardError, match="HTTP 401") as info:
            forward([alert_entry(LABELS)], _poster(client, "wrong-token"))
        assert not isinstance(info.value, WebhookUnavailableError)

    def test_5xx_is_webhook_unavailable(self, webhook) -> None:
        client, trigger = webhook
        trigger.fail = TriggerUnavailable("Airflow's database stayed unavailable")
        with pytest.raises(WebhookUnavailableError, match="HTTP 503"):
            forward([alert_entry(LABELS)], _poster(client))
        trigger.fail = None  # the retry (Airflow's) succeeds
        assert [o["decision"] for o in forward([alert_entry(LABELS)], _poster(client))] == ["triggered"]

    def test_stops_at_the_first_refused_batch(self, webhook) -> None:
        client, trigger = webhook
        entries = [alert_entry({"alertname": "Unrouted", "n": str(i)}) for i in range(60)]
        calls: list[int] = []
        post = _poster(client)

        def failing_second(body: bytes) -> httpx.Response:
            calls.append(len(json.loads(body)["alerts"]))
            return post(body) if len(calls) == 1 else httpx.Response(503, text="busy")

        with pytest.raises(WebhookUnavailableError, match="busy"):
            forward(entries, failing_second)
        assert calls == [50, 10]


class TestWatchDag:
    def test_parses_without_errors_quickly_and_without_urls(self) -> None:
        from airflow.dag_processing.dagbag import DagBag

        path = REPO_ROOT / "dags" / "pitcrew_watch.py"
        started = time.perf_counter()
        bag = DagBag(dag_folder=str(path))
        elapsed = time.perf_counter() - started
        assert bag.import_errors == {}
        dag = bag.dags["pitcrew_watch"]
        assert dag.task_ids == ["poll", "forward", "remind"]
        poll, forward_task = dag.get_task("poll"), dag.get_task("forward")
        assert isinstance(poll, PrometheusFindingsOperator) and isinstance(forward_task, AlertWebhookOperator)
        assert poll.prometheus_conn_id == "{{ params.prometheus_conn_id }}"
        assert forward_task.forward == "{{ params.forward }}"
        assert forward_task.upstream_task_ids == {"poll"}
        assert forward_task.entries.operator is poll  # the findings, through XCom
        assert dag.render_template_as_native_obj  # "{{ params.forward }}" renders as a bool
        assert dag.max_active_runs == 1 and not dag.catchup
        assert dag.timetable.delta.total_seconds() <= 600
        assert set(dag.params.keys()) == {"prometheus_conn_id", "forward"}
        assert elapsed < 5.0
        source = path.read_text()
        assert "http://" not in source and "127.0.0.1" not in source
        json.dumps(dag.params.dump())


class TestOperatorPostsOnlyItsOwnCredential:
    def test_plugin_secrets_of_the_connection_never_travel_as_headers(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The pitcrew_webhook connection as `pitcrew airflow-init` writes it: the extra holds secrets only the
        # plugin reads, which HttpHook would send as headers along with the poller's Alertmanager bodies.
        extra = {"hmac_secret": "the-hmac-secret", "grafana_token": "grafanas-own-token"}
        conn = {"conn_type": "http", "host": "127.0.0.1", "port": 9, "password": TOKEN, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_PITCREW_WEBHOOK", json.dumps(conn))
        trigger = RecordingTrigger()
        app, _ = _make(tmp_path, trigger)
        client = TestClient(app)
        sent: list[dict[str, str]] = []

        def send(session: requests.Session, prepared: requests.PreparedRequest, **kwargs: object) -> requests.Response:
            # What HttpHook would put on the wire, answered by the real webhook app.
            sent.append(dict(prepared.headers))
            answer = client.post("/alerts", content=prepared.body, headers=dict(prepared.headers))
            response = requests.Response()
            response.status_code, response._content = answer.status_code, answer.content
            return response

        monkeypatch.setattr(requests.Session, "send", send)
        task = in_dag(lambda: AlertWebhookOperator(task_id="forward", entries=[alert_entry(LABELS)]))
        (outcome,) = task.execute(context_for(task))
        assert outcome["decision"] == "triggered"  # the webhook token alone still carries the poller's posts
        (headers,) = sent
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert not [name for name, value in headers.items() if any(v in value for v in extra.values())], headers
