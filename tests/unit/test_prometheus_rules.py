"""Alerts and dashboards as code: promtool/amtool validate them; Grafana's copies stay in step."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pitcrew.settings import REPO_ROOT
from pitcrew.stack.components import alertmanager_config
from tests.stack_fixtures import make_settings

DEPLOY = REPO_ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "pitcrew.yml"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt: prometheus)")
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool not installed (apt: prometheus-alertmanager)"
)


#: Alerts about the whole server rather than one model: no `model` label, never a maintenance run.
SERVER_WIDE = {"TritonDown"}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def _alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: {**r, "interval": g.get("interval")} for g in groups for r in g["rules"] if "alert" in r}


class TestPrometheusRules:
    @needs_promtool
    def test_promtool_check_rules(self) -> None:
        result = _run("promtool", "check", "rules", str(RULES))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    @needs_promtool
    def test_promtool_unit_tests(self) -> None:
        tests = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
        assert tests
        result = _run("promtool", "test", "rules", *map(str, tests))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_required_alerts_exist_with_conventions(self) -> None:
        rules = _alert_rules()
        assert {"TritonInferenceFailures", "TritonHighP99Latency", "ModelLowConfidence",
                "ModelUnknownTokenSpike", "ModelDriftScoreHigh"} <= set(rules)  # fmt: skip
        for name, rule in rules.items():
            assert rule["for"], name
            assert rule["labels"]["severity"] in {"warning", "critical"}, name
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
            if name in SERVER_WIDE:
                continue
            assert "model" in rule["expr"], f"{name} must keep the model label the webhook routes on"

    def test_server_wide_alerts_are_not_routed_to_the_pipeline(self) -> None:
        routes = yaml.safe_load((DEPLOY / "alert_routes.yaml").read_text())["routes"]
        assert SERVER_WIDE <= set(_alert_rules())
        assert not SERVER_WIDE & {name for route in routes for name in route["alertnames"]}

    def test_rules_use_the_metrics_the_model_exports(self) -> None:
        source = (REPO_ROOT / "model_repository" / "textclf" / "model.py").read_text()
        rules = RULES.read_text()
        for family in ("pitcrew_top_class_confidence", "pitcrew_unknown_token_ratio"):
            assert f'"{family}"' in source and f"{family}_sum" in rules, family

    def test_triton_failures_is_five_minutes_evaluated_each_minute(self) -> None:
        rule = _alert_rules()["TritonInferenceFailures"]
        assert rule["for"] == "5m" and rule["interval"] == "1m"


class TestAlertmanagerConfig:
    @needs_amtool
    def test_amtool_check_config_of_source(self) -> None:
        result = _run("amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
        assert result.returncode == 0, result.stdout + result.stderr

    @needs_amtool
    def test_amtool_check_config_as_the_stack_fills_it(self, tmp_path: Path) -> None:
        settings = make_settings(tmp_path)
        config = alertmanager_config(settings, "the-token")
        (hook,) = next(r for r in config["receivers"] if r["name"] == "pitcrew")["webhook_configs"]
        assert hook["url"] == f"{settings.airflow_url}/pitcrew/alerts"
        assert hook["http_config"]["authorization"] == {"type": "Bearer", "credentials": "the-token"}
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        result = _run("amtool", "check-config", str(path))
        assert result.returncode == 0, result.stdout + result.stderr

    @needs_amtool
    def test_model_alerts_route_to_the_webhook(self) -> None:
        config = str(DEPLOY / "alertmanager" / "alertmanager.yml")
        routed = _run("amtool", "config", "routes", "test", f"--config.file={config}", "alertname=X", "model=textclf")
        other = _run("amtool", "config", "routes", "test", f"--config.file={config}", "alertname=X")
        assert routed.stdout.strip() == "pitcrew"
        # Without a model no run can start: a person hears of it (every rule: tests/unit/test_alert_routing_tree.py).
        assert other.stdout.strip() == "people"


class TestGrafanaProvisioning:
    GRAFANA = DEPLOY / "grafana"

    def test_grafana_rules_mirror_prometheus_rules(self) -> None:
        prom = _alert_rules()
        groups = yaml.safe_load((self.GRAFANA / "provisioning" / "alerting" / "rules.yml").read_text())["groups"]
        graf = {r["title"]: r for g in groups for r in g["rules"]}
        assert set(graf) == set(prom)
        for name, rule in graf.items():
            expected = " ".join(prom[name]["expr"].split())
            assert rule["data"][0]["model"]["expr"] == f"({expected}) * 0 + 1", name
            assert rule["for"] == prom[name]["for"]
            assert rule["labels"] == prom[name]["labels"]
            assert rule["annotations"] == prom[name]["annotations"]
            assert rule["data"][0]["datasourceUid"] == "prometheus"

    def test_contact_point_signs_with_hmac_and_secrets_come_from_env(self) -> None:
        text = (self.GRAFANA / "provisioning" / "alerting" / "contact_points.yml").read_text()
        (receiver,) = yaml.safe_load(text)["contactPoints"][0]["receivers"]
        settings = receiver["settings"]
        assert receiver["type"] == "webhook"
        assert settings["url"].endswith("/pitcrew/alerts")
        assert settings["hmacConfig"]["secret"] == "${PITCREW_WEBHOOK_HMAC_SECRET}"
        assert settings["hmacConfig"]["header"].lower() == "x-grafana-alerting-signature"
        assert settings["hmacConfig"]["timestampHeader"].lower() == "x-grafana-alerting-timestamp"
        assert settings["authorization_credentials"] == "${PITCREW_GRAFANA_TOKEN}"  # Grafana's own, not Alertmanager's

    def test_datasource_uid_matches_dashboard_and_rules(self) -> None:
        (source,) = yaml.safe_load((self.GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
            "datasources"
        ]
        dashboard = json.loads((self.GRAFANA / "dashboards" / "pitcrew.json").read_text())
        uids = {p["datasource"]["uid"] for p in dashboard["panels"] if p["type"] != "row"}
        assert uids == {source["uid"]}

    def test_dashboard_covers_triton_business_drift_and_pipeline(self) -> None:
        dashboard = json.loads((self.GRAFANA / "dashboards" / "pitcrew.json").read_text())
        exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
        for metric in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_request_duration_us",
                       "nv_inference_queue_duration_us", "nv_inference_request_summary_us",
                       "pitcrew_top_class_confidence", "pitcrew_unknown_token_ratio", "pitcrew_predictions_total",
                       "pitcrew_input_tokens", "pitcrew_drift_effect_size",
                       "pitcrew_alerts_total", "pitcrew_webhook_rejected_requests_total",
                       "pitcrew_model_accuracy", "pitcrew_model_estimated_accuracy", "pitcrew_model_accuracy_rows",
                       "pitcrew_feedback_labels_received_total", "pitcrew_feedback_labels_rejected_total",
                       "pitcrew_feedback_label_lag_seconds_bucket",
                       "pitcrew_pipeline_runs_total", "pitcrew_rollbacks_total", "pitcrew_approval_wait_seconds",
                       "pitcrew_approval_pending_since_timestamp_seconds", "pitcrew_alert_to_deploy_seconds",
                       "pitcrew_training_device_seconds_total",
                       "pitcrew_pipeline_last_success_timestamp_seconds"):  # fmt: skip
            assert metric in exprs, metric
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))

    def test_pipeline_health_row(self) -> None:
        dashboard = json.loads((self.GRAFANA / "dashboards" / "pitcrew.json").read_text())
        panels = dashboard["panels"]
        (row,) = [i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Pipeline health"]
        below = panels[row + 1 :]
        titles = {p["title"] for p in below}
        assert {"Runs by outcome", "Rollbacks", "Approval wait", "Alert to deploy",
                "Training device-seconds by device"} <= titles  # fmt: skip
        assert min(p["id"] for p in panels[row:]) > max(p["id"] for p in panels[:row])
        exprs = " ".join(t["expr"] for p in below for t in p.get("targets", []))
        assert re.search(r"by \([^)]*\boutcome\b", exprs) and re.search(r"by \([^)]*\bdevice\b", exprs)
