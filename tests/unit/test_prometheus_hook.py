from __future__ import annotations

import json
import math
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowNotFoundException

import operators.prometheus_hook as prometheus_hook
from operators.prometheus_hook import PrometheusHook, PrometheusHookError, PrometheusUnavailableError
from tests.stack_fixtures import free_ports
from tests.unit.conftest import FakePrometheus, sample


def use_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str = "prom", **fields: Any) -> PrometheusHook:
    """Define the connection as Airflow reads it from the environment; a hook on it."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "prometheus", **fields}))
    return PrometheusHook(conn_id)


def _hook_for(monkeypatch: pytest.MonkeyPatch, url: str) -> PrometheusHook:
    return use_connection(monkeypatch, host=url)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's own retry policy, without its backoff sleeps (the count of attempts is unchanged)."""
    monkeypatch.setattr(
        prometheus_hook, "CLIENT_RETRY", {**prometheus_hook.CLIENT_RETRY, "backoff_factor": 0}
    )


class TestPrometheusHook:
    def test_url_from_connection(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = use_connection(monkeypatch, host="prom.example", port=9090, schema="https")
        assert hook.get_url() == "https://prom.example:9090"

    def test_url_with_scheme_in_host_and_no_port(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert use_connection(monkeypatch, host="http://prom.example/").get_url() == "http://prom.example"

    def test_connection_params_carry_auth_headers_and_ssl(self, monkeypatch: pytest.MonkeyPatch) -> None:
        use_connection(monkeypatch, host="prom.example", login="reader", password="pw",
                       extra={"headers": {"X-Scope-OrgID": "team"}, "disable_ssl": True})  # fmt: skip
        params = PrometheusHook.connection_params(PrometheusHook.get_connection("prom"))
        assert params == {"url": "http://prom.example", "headers": {"X-Scope-OrgID": "team"},
                          "disable_ssl": True, "auth": ("reader", "pw")}  # fmt: skip

    def test_missing_connection_is_not_replaced_by_settings(self) -> None:
        with pytest.raises(AirflowNotFoundException):
            PrometheusHook("pitcrew_no_such_prometheus").get_url()

    def test_connection_without_host_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = use_connection(monkeypatch, port=9090)
        with pytest.raises(ValueError, match="no host"):
            hook.get_url()
        with pytest.raises(ValueError, match="no host"):
            hook.query("up")

    def test_query_returns_vector(self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus) -> None:
        prometheus.answers["up > 0"] = [sample({"job": "triton"}, 1)]
        hook = _hook_for(monkeypatch, prometheus.url)
        assert hook.query("up > 0") == [sample({"job": "triton"}, 1)]
        assert hook.test_connection()[0] is True

    def test_values_one_float_per_series_nan_kept(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        prometheus.answers["ratio"] = [
            sample({"v": "1"}, 0.25),
            sample({"v": "2"}, float("nan")),
            sample({}, 3),
        ]
        values = _hook_for(monkeypatch, prometheus.url).values("ratio")
        assert values[0] == 0.25 and math.isnan(values[1]) and values[2] == 3.0
        assert _hook_for(monkeypatch, prometheus.url).values("nothing") == []

    def test_query_error_is_typed(self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus) -> None:
        prometheus.answers["bad("] = (400, {"status": "error", "error": "parse error"})
        with pytest.raises(PrometheusHookError, match="bad") as info:
            _hook_for(monkeypatch, prometheus.url).query("bad(")
        assert not isinstance(info.value, PrometheusUnavailableError)  # a refused query is not retried
        assert prometheus.queries == ["bad("]

    def test_scalar_answer_is_not_a_vector(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        prometheus.answers["1"] = (200, {"status": "success", "data": {"resultType": "scalar",
                                                                        "result": [1700000000.0, "1"]}})  # fmt: skip
        with pytest.raises(PrometheusHookError, match="instant vector"):
            _hook_for(monkeypatch, prometheus.url).values("1")

    @pytest.mark.usefixtures("quick_retries")
    def test_unreachable_is_unavailable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = use_connection(monkeypatch, host="127.0.0.1", port=free_ports(1)[0])
        with pytest.raises(PrometheusUnavailableError, match="unreachable"):
            hook.query("up")
        assert hook.test_connection()[0] is False

    @pytest.mark.usefixtures("quick_retries")
    def test_5xx_is_retried_by_the_client_then_unavailable(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        prometheus.answers["up"] = (503, {"status": "error", "error": "restarting"})
        with pytest.raises(PrometheusUnavailableError):
            _hook_for(monkeypatch, prometheus.url).query("up")
        assert len(prometheus.queries) == 1 + prometheus_hook.CLIENT_RETRY["total"]

    @pytest.mark.usefixtures("quick_retries")
    def test_5xx_blip_is_absorbed_by_the_client(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        answers = iter([(502, {"status": "error"}), [sample({}, 1)]])
        prometheus.answers["up"] = lambda: next(answers)
        assert _hook_for(monkeypatch, prometheus.url).values("up") == [1.0]

    def test_firing_alerts_drop_state_labels_and_carry_activation(
        self, monkeypatch: pytest.MonkeyPatch, prometheus: FakePrometheus
    ) -> None:
        labels = {"alertname": "TritonInferenceFailures", "model": "textclf", "severity": "warning"}
        prometheus.answers['ALERTS{alertstate="firing"}'] = [
            sample({"__name__": "ALERTS", "alertstate": "firing", **labels}, 1)
        ]
        prometheus.answers["ALERTS_FOR_STATE"] = [
            sample({"__name__": "ALERTS_FOR_STATE", **labels}, 1699999000)
        ]
        alerts = _hook_for(monkeypatch, prometheus.url).firing_alerts()
        assert alerts == [{"labels": labels, "active_at": 1699999000.0}]
