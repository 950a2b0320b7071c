"""The poller's operators: findings from a (tiny, real) Prometheus; posts through HttpHook to the real webhook app.

The webhook app is the one the Airflow plugin mounts (built like tests/unit/test_webhook.py does, with a
recording stand-in for Airflow's run creation), served over HTTP by uvicorn at ``/pitcrew``.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException
from fastapi import FastAPI

import operators.prometheus_hook as prometheus_hook
from operators.prometheus_hook import PrometheusUnavailableError
from operators.watch_operators import WEBHOOK_CONN_ID, AlertWebhookOperator, PrometheusFindingsOperator
from pitcrew.alerts.client import alert_entry
from pitcrew.alerts.errors import TriggerUnavailable
from pitcrew.alerts.fingerprint import labels_fingerprint
from pitcrew.alerts.watch import BATCH_SIZE, WebhookUnavailableError
from pitcrew.settings import REPO_ROOT, get_settings
from tests.stack_fixtures import free_ports
from tests.unit.conftest import TOKEN, FakePrometheus, RecordingTrigger, _make, sample
from tests.unit.operator_context import context_for, in_dag

ROUTES = REPO_ROOT / "deploy" / "alert_routes.yaml"
LABELS = {"alertname": "TritonInferenceFailures", "model": "textclf", "severity": "warning"}
FIRING = 'ALERTS{alertstate="firing"}'
DRIFT = "max by (model) (pitcrew_drift_effect_size) > 0.3"
ERROR_RATIO = "model:nv_inference_request_failure:ratio_rate5m > 0.01"


def _connect_prometheus(
    monkeypatch: pytest.MonkeyPatch, conn_id: str = "prometheus_default", **fields: Any
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "prometheus", **fields}))


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Prometheus client's own retry policy without its backoff sleeps."""
    monkeypatch.setattr(
        prometheus_hook, "CLIENT_RETRY", {**prometheus_hook.CLIENT_RETRY, "backoff_factor": 0}
    )


def _firing(prometheus: FakePrometheus, labels: dict[str, str], active_at: float = 1_800_000_000.0) -> None:
    prometheus.answers[FIRING] = [sample({"__name__": "ALERTS", "alertstate": "firing", **labels}, 1)]
    prometheus.answers["ALERTS_FOR_STATE"] = [sample({"__name__": "ALERTS_FOR_STATE", **labels}, active_at)]


def _findings(routes_file: Path | None = ROUTES, **kwargs: Any) -> PrometheusFindingsOperator:
    return in_dag(
        lambda: PrometheusFindingsOperator(task_id="poll", routes_file=routes_file, **kwargs), "forward"
    )


class TestPrometheusFindingsOperator:
    def test_firing_alerts_and_uncovered_breaches(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        _connect_prometheus(monkeypatch, host=prometheus.url)
        _firing(prometheus, LABELS)
        prometheus.answers[DRIFT] = [sample({"model": "textclf"}, 0.8), sample({"model": "other"}, 0.5)]
        prometheus.answers[ERROR_RATIO] = [sample({"__name__": "x", "model": "other", "version": "3"}, 0.2)]
        task = _findings()
        findings = task.execute(context_for(task))
        json.dumps(findings)  # an XCom
        assert [(f["labels"]["alertname"], f["labels"].get("model")) for f in findings] == [
            ("TritonInferenceFailures", "textclf"),  # firing first; its model's drift breach is dropped
            ("PitcrewErrorRatioHigh", "other"),
            ("PitcrewDriftScoreHigh", "other"),
        ]
        alert = findings[0]
        assert alert["labels"] == LABELS and alert["fingerprint"] == labels_fingerprint(LABELS)
        assert alert["startsAt"].startswith("2027-01-15T08:00:00")  # ALERTS_FOR_STATE's activation time
        assert findings[1]["labels"] == {
            "alertname": "PitcrewErrorRatioHigh",
            "model": "other",
            "version": "3",
        }
        assert findings[1]["annotations"] == {"expr": ERROR_RATIO, "value": "0.2"}
        # Every query of the routing file, then the two alert series.
        assert set(prometheus.queries) == {
            "model:nv_inference_request_failure:ratio_rate5m > 0.01",
            "model:nv_inference_request_duration_seconds:p99 > 1",
            "model:pitcrew_top_class_confidence:mean5m < 0.5",
            DRIFT, "ALERTS_FOR_STATE", FIRING,
        }  # fmt: skip

    def test_nothing_wrong_is_no_finding(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        _connect_prometheus(monkeypatch, host=prometheus.url)
        task = _findings()
        assert task.execute(context_for(task)) == []

    def test_default_routes_file_is_in_the_deploy_dir(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus, tmp_path: Path
    ) -> None:
        deploy = tmp_path / "deploy"
        deploy.mkdir()
        shutil.copy(ROUTES, deploy / "alert_routes.yaml")
        with (deploy / "alert_routes.yaml").open("a") as routes:
            routes.write("  - name: PitcrewCustomBreach\n    expr: custom_metric > 1\n")
        monkeypatch.setenv("PITCREW_DEPLOY_DIR", str(deploy))
        get_settings.cache_clear()
        try:
            _connect_prometheus(monkeypatch, host=prometheus.url)
            prometheus.answers["custom_metric > 1"] = [sample({"model": "textclf"}, 2)]
            task = _findings(routes_file=None)
            (finding,) = task.execute(context_for(task))
        finally:
            get_settings.cache_clear()
        assert finding["labels"] == {"alertname": "PitcrewCustomBreach", "model": "textclf"}

    def test_templated_connection(self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus) -> None:
        _connect_prometheus(monkeypatch, "prom_eu", host=prometheus.url)
        _firing(prometheus, LABELS)
        task = _findings(prometheus_conn_id="{{ params.prometheus_conn_id }}")
        context = context_for(task, params={"prometheus_conn_id": "prom_eu"})
        task.render_template_fields(context)
        assert [f["labels"] for f in task.execute(context)] == [LABELS]

    def test_refused_query_fails_for_good(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        _connect_prometheus(monkeypatch, host=prometheus.url)
        prometheus.answers[DRIFT] = (
            400,
            {"status": "error", "errorType": "bad_data", "error": "parse error"},
        )
        task = _findings()
        with pytest.raises(AirflowFailException, match="PrometheusHookError"):
            task.execute(context_for(task))

    @pytest.mark.usefixtures("quick_retries")
    def test_unreachable_prometheus_is_retried(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connect_prometheus(monkeypatch, host="127.0.0.1", port=free_ports(1)[0])
        task = _findings()
        with pytest.raises(PrometheusUnavailableError):
            task.execute(context_for(task))

    def test_missing_connection_fails_for_good(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", raising=False)
        task = _findings(prometheus_conn_id="pitcrew_no_such_prometheus")
        with pytest.raises(AirflowFailException, match="pitcrew_no_such_prometheus"):
            task.execute(context_for(task))


@dataclass
class Webhook:
    """The real webhook app served over HTTP; what reached it, and the recording stand-in for Airflow."""

    port: int
    trigger: RecordingTrigger
    requests: list[dict[str, Any]] = field(default_factory=list)  # method, path, headers (lowercased)

    @property
    def posts(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]


def _connect_webhook(monkeypatch: pytest.MonkeyPatch, port: int, **fields: Any) -> None:
    conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": port,
        "schema": "http",
        "password": TOKEN,
        **fields,
    }
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{WEBHOOK_CONN_ID.upper()}", json.dumps({k: v for k, v in conn.items() if v})
    )


@pytest.fixture
def webhook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    trigger = RecordingTrigger()
    app, _ = _make(tmp_path, trigger)
    root = FastAPI()
    root.mount("/pitcrew", app)  # as the plugin mounts it on Airflow's API server
    served = Webhook(free_ports(1)[0], trigger)

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            served.requests.append({"method": scope["method"], "path": scope["path"], "headers": headers})
        await root(scope, receive, send)

    server = uvicorn.Server(
        uvicorn.Config(recording, host="127.0.0.1", port=served.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the webhook server did not start"
        time.sleep(0.02)
    _connect_webhook(monkeypatch, served.port)
    yield served
    server.should_exit = True
    thread.join(timeout=10)


def _forwarder(entries: Any, **kwargs: Any) -> AlertWebhookOperator:
    return in_dag(lambda: AlertWebhookOperator(task_id="forward", entries=entries, **kwargs))


def _forward(entries: Any, **kwargs: Any) -> list[dict[str, Any]]:
    task = _forwarder(entries, **kwargs)
    return task.execute(context_for(task))


def _polled() -> list[dict[str, Any]]:
    return [alert_entry(LABELS)]


class TestAlertWebhookOperator:
    def test_triggered_then_cooldown(self, webhook: Webhook) -> None:
        (first,) = _forward(_polled())
        assert first["decision"] == "triggered"
        ((dag_id, _, conf),) = webhook.trigger.calls
        assert dag_id == "pitcrew_maintenance_textclf"
        assert conf["trigger"] == "watch" and conf["alert"]["source"] == "pitcrew_watch"
        # The next poll finds the same alert: same fingerprint, one policy: no second run.
        assert [o["decision"] for o in _forward(_polled())] == ["cooldown"]
        assert len(webhook.trigger.calls) == 1
        assert [p["path"] for p in webhook.posts] == ["/pitcrew/alerts"] * 2

    def test_token_only_in_the_authorization_header(self, webhook: Webhook) -> None:
        _forward(_polled())
        (post,) = webhook.posts
        assert post["headers"]["authorization"] == f"Bearer {TOKEN}"
        others = {name: value for name, value in post["headers"].items() if name != "authorization"}
        assert not [name for name, value in others.items() if TOKEN in value], others
        assert post["headers"]["content-type"] == "application/json"

    def test_batches_of_fifty(self, webhook: Webhook) -> None:
        entries = [alert_entry({"alertname": "Unrouted", "n": str(i)}) for i in range(2 * BATCH_SIZE + 20)]
        outcomes = _forward(entries)
        assert len(outcomes) == 120 and {o["decision"] for o in outcomes} == {"unrouted"}
        assert BATCH_SIZE == 50 and len(webhook.posts) == 3
        assert webhook.trigger.calls == []

    def test_wrong_token_fails_for_good(self, webhook: Webhook, monkeypatch: pytest.MonkeyPatch) -> None:
        _connect_webhook(monkeypatch, webhook.port, password="not-the-token")
        with pytest.raises(AirflowFailException, match="HTTP 401") as info:
            _forward(_polled())
        assert not isinstance(info.value.__cause__, WebhookUnavailableError)
        assert len(webhook.posts) == 1  # not retried by the hook either
        assert webhook.trigger.calls == []

    def test_503_propagates_for_airflow_to_retry(self, webhook: Webhook) -> None:
        webhook.trigger.fail = TriggerUnavailable("Airflow's database stayed unavailable")
        with pytest.raises(WebhookUnavailableError, match="HTTP 503"):
            _forward(_polled())
        webhook.trigger.fail = None  # Airflow's retry
        assert [o["decision"] for o in _forward(_polled())] == ["triggered"]

    @pytest.mark.parametrize("forward", [False, "False", "false"])
    def test_forward_off_posts_nothing(self, webhook: Webhook, forward: Any) -> None:
        assert _forward(_polled(), forward=forward) == []
        assert webhook.requests == [] and webhook.trigger.calls == []

    @pytest.mark.parametrize("entries", [[], None])
    def test_no_findings_posts_nothing(self, webhook: Webhook, entries: Any) -> None:
        assert _forward(entries) == []
        assert webhook.requests == []

    def test_connection_without_token_is_a_clear_error(
        self, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _connect_webhook(monkeypatch, webhook.port, password=None)
        with pytest.raises(
            AirflowFailException, match=f"connection '{WEBHOOK_CONN_ID}' has no password: set"
        ):
            _forward(_polled())
        assert webhook.requests == []

    def test_unreachable_webhook_is_retried(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _connect_webhook(monkeypatch, free_ports(1)[0])
        with pytest.raises(requests.ConnectionError):
            _forward(_polled())

    def test_findings_reach_the_webhook_through_xcom(
        self, webhook: Webhook, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        """The watch DAG's wiring: ``entries=poll.output``, ``forward`` a rendered param."""
        _connect_prometheus(monkeypatch, host=prometheus.url)
        _firing(prometheus, LABELS)
        with DAG(dag_id="watch", schedule=None, render_template_as_native_obj=True):
            poll = PrometheusFindingsOperator(task_id="poll", routes_file=str(ROUTES))
            post = AlertWebhookOperator(
                task_id="forward", entries=poll.output, forward="{{ params.forward }}"
            )
        poll_context = context_for(poll)
        findings = poll.execute(poll_context)
        context = context_for(post, params={"forward": True}, poll=findings)
        post.render_template_fields(context)
        assert post.entries == findings and post.forward is True
        (outcome,) = post.execute(context)
        assert outcome["decision"] == "triggered"
        assert webhook.trigger.calls[0][2]["alert"]["fingerprint"] == labels_fingerprint(LABELS)
