from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitcrew.alerts.errors import RoutesFileError
from pitcrew.alerts.payloads import Alert
from pitcrew.alerts.routing import RoutesFile, load_routes, route_alert
from pitcrew.settings import REPO_ROOT


def _alert(name: str = "TritonInferenceFailures", **labels: str) -> Alert:
    return Alert(
        name=name,
        status="firing",
        labels={"alertname": name, **labels},
        fingerprint="abc123",
        starts_at=datetime(2026, 11, 22, tzinfo=UTC),
        source="alertmanager",
    )


def _routes(*routes: dict) -> RoutesFile:
    return RoutesFile.model_validate({"routes": list(routes)})


class TestRouteAlert:
    def test_repo_routes_file_routes_textclf_to_its_maintenance_dag(self) -> None:
        routes = load_routes(REPO_ROOT / "deploy" / "alert_routes.yaml")
        routed = route_alert(routes, _alert(model="textclf", severity="warning"), {"textclf"})
        assert routed is not None
        assert routed.dag_id == "pitcrew_maintenance_textclf"
        assert routed.model == "textclf"
        assert routed.conf["trigger"] == "alert"
        assert routed.conf["model"] == "textclf"
        assert routed.conf["alert"]["fingerprint"] == "abc123"
        assert routed.conf["alert"]["labels"]["severity"] == "warning"

    def test_repo_routes_file_queries_are_named_like_routed_alerts(self) -> None:
        routes = load_routes(REPO_ROOT / "deploy" / "alert_routes.yaml")
        assert routes.queries
        for query in routes.queries:
            assert route_alert(routes, _alert(query.name, model="textclf"), {"textclf"}) is not None

    def test_unknown_model_is_not_routed(self) -> None:
        routes = _routes({"dag_id": "d_{model}"})
        assert route_alert(routes, _alert(model="ghost"), {"textclf"}) is None
        assert route_alert(routes, _alert(), {"textclf"}) is None

    def test_first_matching_route_wins(self) -> None:
        routes = _routes(
            {"alertnames": ["Other"], "dag_id": "first_{model}"},
            {"match": {"severity": "critical"}, "dag_id": "critical_{model}", "conf": {"urgent": True}},
            {"match_re": {"severity": "warn.*"}, "dag_id": "warning_{model}"},
        )
        critical = route_alert(routes, _alert(model="m", severity="critical"), {"m"})
        warning = route_alert(routes, _alert(model="m", severity="warning"), {"m"})
        assert critical is not None and critical.dag_id == "critical_m" and critical.conf["urgent"] is True
        assert warning is not None and warning.dag_id == "warning_m"
        assert route_alert(routes, _alert(model="m", severity="info"), {"m"}) is None

    def test_match_re_is_a_full_match(self) -> None:
        routes = _routes({"match_re": {"severity": "warn"}})
        assert route_alert(routes, _alert(model="m", severity="warning"), {"m"}) is None

    def test_conf_cannot_override_alert_keys(self) -> None:
        routes = _routes({"conf": {"trigger": "manual", "model": "x"}})
        routed = route_alert(routes, _alert(model="m"), {"m"})
        assert routed is not None and routed.conf["trigger"] == "alert" and routed.conf["model"] == "m"


class TestLoadRoutes:
    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(RoutesFileError, match="does not exist"):
            load_routes(tmp_path / "nope.yaml")

    @pytest.mark.parametrize(
        ("text", "needle"),
        [
            ("routes: [", "not valid YAML"),
            ("routes: []", "routes"),
            ("routes: [{dag_id: 'x_{other}'}]", "placeholder"),
            ("routes: [{dag_id: 'bad id {model}'}]", "valid DAG id"),
            ("routes: [{match_re: {a: '('}}]", "match_re.a"),
            ("routes: [{}]\nqueries: [{name: '1x', expr: up}]", "queries.0.name"),
            ("routes: [{colour: red}]", "colour"),
        ],
    )
    def test_invalid_file_names_the_field(self, tmp_path: Path, text: str, needle: str) -> None:
        path = tmp_path / "routes.yaml"
        path.write_text(text)
        with pytest.raises(RoutesFileError) as info:
            load_routes(path)
        assert needle in str(info.value)
        assert str(path) in str(info.value)
