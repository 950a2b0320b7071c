from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from operators.prometheus_hook import PrometheusHook, PrometheusHookError
from pitcrew.settings import get_settings


class FakePrometheus:
    """A tiny HTTP server answering /api/v1/query from a dict of query -> (status, body) or result list."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.queries: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                if parsed.path == "/-/ready":
                    return self._send(200, {"status": "ready"})
                query = parse_qs(parsed.query).get("query", [""])[0]
                outer.queries.append(query)
                answer = outer.answers.get(query, [])
                if callable(answer):
                    answer = answer()
                if isinstance(answer, tuple):
                    return self._send(*answer)
                self._send(200, {"status": "success", "data": {"resultType": "vector", "result": answer}})

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.close()


def _hook_for(monkeypatch: pytest.MonkeyPatch, url: str) -> PrometheusHook:
    port = int(url.rsplit(":", 1)[1])
    conn = Connection(conn_id="prom", conn_type="prometheus", host="127.0.0.1", port=port, schema="http")
    monkeypatch.setattr(PrometheusHook, "get_connection", classmethod(lambda cls, conn_id: conn))
    return PrometheusHook("prom")


def sample(labels: dict[str, str], value: float) -> dict[str, Any]:
    return {"metric": labels, "value": [1700000000.0, str(value)]}


class TestPrometheusHook:
    def test_url_from_connection(self, monkeypatch: pytest.MonkeyPatch) -> None:
        conn = Connection(conn_id="p", conn_type="prometheus", host="prom.example", port=9090, schema="https")
        monkeypatch.setattr(PrometheusHook, "get_connection", classmethod(lambda cls, conn_id: conn))
        assert PrometheusHook("p").get_url() == "https://prom.example:9090"

    def test_url_with_scheme_in_host_and_no_port(self, monkeypatch: pytest.MonkeyPatch) -> None:
        conn = Connection(conn_id="p", conn_type="prometheus", host="http://prom.example/")
        monkeypatch.setattr(PrometheusHook, "get_connection", classmethod(lambda cls, conn_id: conn))
        assert PrometheusHook("p").get_url() == "http://prom.example"

    def test_falls_back_to_settings_without_connection(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def missing(cls, conn_id: str) -> Connection:
            raise AirflowNotFoundException(conn_id)

        monkeypatch.setattr(PrometheusHook, "get_connection", classmethod(missing))
        assert PrometheusHook().get_url() == get_settings().prometheus_url

    def test_query_returns_vector(self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus) -> None:
        prometheus.answers["up > 0"] = [sample({"job": "triton"}, 1)]
        hook = _hook_for(monkeypatch, prometheus.url)
        assert hook.query("up > 0") == [sample({"job": "triton"}, 1)]
        assert hook.test_connection()[0] is True

    def test_query_error_is_typed(self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus) -> None:
        prometheus.answers["bad("] = (400, {"status": "error", "error": "parse error"})
        with pytest.raises(PrometheusHookError, match="bad"):
            _hook_for(monkeypatch, prometheus.url).query("bad(")

    def test_firing_alerts_drop_state_labels_and_carry_activation(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        labels = {"alertname": "TritonInferenceFailures", "model": "textclf", "severity": "warning"}
        prometheus.answers['ALERTS{alertstate="firing"}'] = [
            sample({"__name__": "ALERTS", "alertstate": "firing", **labels}, 1)
        ]
        prometheus.answers["ALERTS_FOR_STATE"] = [sample({"__name__": "ALERTS_FOR_STATE", **labels}, 1699999000)]
        alerts = _hook_for(monkeypatch, prometheus.url).firing_alerts()
        assert alerts == [{"labels": labels, "active_at": 1699999000.0}]
