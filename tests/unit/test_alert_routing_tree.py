"""Who hears of which alert: Alertmanager's routing tree (``amtool config routes test``) and inhibitions, and
Grafana's notification policies, for every alert rule in deploy/prometheus/rules/*.yml.

Each alert is routed with the labels it really carries: those its promtool unit tests expect
(deploy/prometheus/tests/*.yml), so a rule without a firing test fails here too. The configs tested: the
source alertmanager.yml, the local stack's generated config for every PITCREW_PAGER, and compose's file
with every pager file appended, as compose's Alertmanager does at start.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from pitcrew.settings import REPO_ROOT
from pitcrew.stack.components import (
    PAGER_RECEIVERS,
    StackError,
    alertmanager_component,
    alertmanager_config,
    pager_secret_files,
)
from tests.stack_fixtures import make_settings
from tests.unit.conftest import META, QUALITY, SERVING, alert_labels, expected_receivers

DEPLOY = REPO_ROOT / "deploy"
ALERTMANAGER = DEPLOY / "alertmanager"
PAGERS = ("none", "pagerduty", "slack", "email")
GRAFANA_ALERTING = DEPLOY / "grafana" / "provisioning" / "alerting"

needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool not installed (apt: prometheus-alertmanager)"
)


def _rule_names() -> list[str]:
    return sorted(
        rule["alert"]
        for path in (DEPLOY / "prometheus" / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    )


RULES = _rule_names()
LABELS = alert_labels()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _configs(tmp_path: Path) -> dict[str, Path]:
    """Every Alertmanager config that runs somewhere, by a name for the test report."""
    configs = {"source": ALERTMANAGER / "alertmanager.yml"}
    base = (ALERTMANAGER / "alertmanager.compose.yml").read_text()
    for pager in PAGERS:
        settings = make_settings(tmp_path / pager, pager=pager)
        stack = yaml.safe_dump(alertmanager_config(settings, "the-token"), sort_keys=False)
        configs[f"stack-{pager}"] = _write(tmp_path, f"stack-{pager}.yml", stack)
        compose = base + (ALERTMANAGER / "pager" / f"{pager}.yml").read_text()
        configs[f"compose-{pager}"] = _write(tmp_path, f"compose-{pager}.yml", compose)
    return configs


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _configs(tmp_path_factory.mktemp("alertmanager"))


def _amtool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["amtool", *argv], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def _route(config: Path, labels: Mapping[str, str]) -> list[str]:
    result = _amtool(
        "config", "routes", "test", f"--config.file={config}", *(f"{k}={v}" for k, v in labels.items())
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(",")


class TestEveryRuleIsPlanned:
    def test_each_rule_has_exactly_one_class(self) -> None:
        assert set(RULES) == SERVING | QUALITY | META
        assert not (SERVING & QUALITY or SERVING & META or QUALITY & META)

    def test_each_rule_has_a_firing_promtool_case(self) -> None:
        assert set(RULES) <= set(LABELS), "every alert needs a promtool case that fires it"

    def test_meta_alerts_start_no_run(self) -> None:
        routes = yaml.safe_load((DEPLOY / "alert_routes.yaml").read_text())["routes"]
        routed = {name for route in routes for name in route["alertnames"]}
        assert not routed & META
        assert not [r for r in routes if not r["alertnames"]], "an any-name route would catch meta-alerts"

    def test_serving_and_quality_alerts_carry_the_webhooks_model_label(self) -> None:
        for alert in (SERVING | QUALITY | META) - {"TritonDown"}:
            assert LABELS[alert].get("model"), alert


@needs_amtool
class TestAlertmanagerTree:
    @pytest.mark.parametrize(
        "config_name", ["source", *(f"{k}-{p}" for k in ("stack", "compose") for p in PAGERS)]
    )
    def test_config_is_valid(self, configs: dict[str, Path], config_name: str) -> None:
        result = _amtool("check-config", str(configs[config_name]))
        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.parametrize("alert", RULES)
    def test_every_alert_reaches_its_receivers_in_every_config(
        self, configs: dict[str, Path], alert: str
    ) -> None:
        labels = {"alertname": alert, **LABELS[alert]}
        for name, config in configs.items():
            assert _route(config, labels) == expected_receivers(alert, labels), f"{name}: {labels}"

    @pytest.mark.parametrize("alert", RULES)
    def test_grafanas_copy_reaches_people_only(self, configs: dict[str, Path], alert: str) -> None:
        labels = {"alertname": alert, **LABELS[alert], "grafana_folder": "pitcrew"}
        expected = ["pager"] if alert in SERVING else ["people"]
        for name, config in configs.items():
            assert _route(config, labels) == expected, f"{name}: {labels}"

    def test_unplanned_alerts(self, configs: dict[str, Path]) -> None:
        for name, config in configs.items():
            # A new rule with a model reaches the pipeline, which routes it by deploy/alert_routes.yaml ...
            assert _route(config, {"alertname": "X", "model": "textclf"}) == ["pitcrew"], name
            # ... one without a model reaches a person rather than nobody.
            assert _route(config, {"alertname": "X"}) == ["people"], name

    def test_compose_and_source_share_the_tree(self) -> None:
        source = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())
        compose = yaml.safe_load(
            (ALERTMANAGER / "alertmanager.compose.yml").read_text()
            + (ALERTMANAGER / "pager" / "none.yml").read_text()
        )
        assert compose["route"]["routes"] == source["route"]["routes"]
        assert compose["route"]["receiver"] == source["route"]["receiver"]
        assert compose["inhibit_rules"] == source["inhibit_rules"]
        assert [r["name"] for r in compose["receivers"]] == [r["name"] for r in source["receivers"]]


class TestPagerChoice:
    @pytest.mark.parametrize("pager", PAGERS)
    def test_pager_file_defines_pager_and_people(self, pager: str) -> None:
        receivers = yaml.safe_load((ALERTMANAGER / "pager" / f"{pager}.yml").read_text())
        assert sorted(r["name"] for r in receivers) == sorted(PAGER_RECEIVERS)

    def test_none_is_the_default_and_integrates_nothing(self, tmp_path: Path) -> None:
        settings = make_settings(tmp_path)
        assert settings.pager == "none"
        config = alertmanager_config(settings, "tok")
        assert [r for r in config["receivers"] if r["name"] in PAGER_RECEIVERS] == [
            {"name": "pager"},
            {"name": "people"},
        ]

    @pytest.mark.parametrize(
        ("pager", "key", "secret"),
        [
            ("pagerduty", "pagerduty_configs", "pagerduty_routing_key"),
            ("slack", "slack_configs", "slack_webhook_url"),
            ("email", "email_configs", "email_password"),
        ],
    )
    def test_secrets_come_from_files_in_the_secrets_folder(
        self, tmp_path: Path, pager: str, key: str, secret: str
    ) -> None:
        settings = make_settings(tmp_path, pager=pager)
        config = alertmanager_config(settings, "tok")
        receivers = {r["name"]: r for r in config["receivers"]}
        assert all(receivers[name][key] for name in PAGER_RECEIVERS)
        assert pager_secret_files(config) == [settings.secrets_path / "pager" / secret]
        # Only the webhook gets the webhook's URL and token; nothing secret is inlined.
        text = yaml.safe_dump([receivers[name] for name in PAGER_RECEIVERS])
        assert "tok" not in text and "/pitcrew/alerts" not in text
        assert not re.search(r"(routing_key|service_key|api_url|auth_password):", text)

    def test_pagerduty_pages_for_pager_and_not_for_people(self, tmp_path: Path) -> None:
        config = alertmanager_config(make_settings(tmp_path, pager="pagerduty"), "tok")
        severity = {
            r["name"]: r["pagerduty_configs"][0]["severity"]
            for r in config["receivers"]
            if r["name"] in PAGER_RECEIVERS
        }
        assert severity == {"pager": "critical", "people": "warning"}

    def test_unknown_pager_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="pager"):
            make_settings(tmp_path, pager="carrier-pigeon")

    def test_stack_refuses_a_missing_or_open_secret_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import pitcrew.stack.components as components

        monkeypatch.setattr(components, "require_binary", lambda *_: "/usr/bin/alertmanager")
        settings = make_settings(tmp_path, pager="pagerduty")
        component = alertmanager_component(settings)
        with pytest.raises(StackError, match="pagerduty_routing_key is missing"):
            component.processes()
        key = settings.secrets_path / "pager" / "pagerduty_routing_key"
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text("not-a-real-key")
        key.chmod(0o644)
        with pytest.raises(StackError, match="readable by group or others"):
            component.processes()
        key.chmod(0o600)
        (process,) = component.processes()
        written = yaml.safe_load((settings.home_dir / "alertmanager" / "alertmanager.yml").read_text())
        assert pager_secret_files(written) == [key]
        assert stat.S_IMODE((settings.home_dir / "alertmanager" / "alertmanager.yml").stat().st_mode) == 0o600
        assert "not-a-real-key" not in " ".join(process.argv)


# Inhibition ---------------------------------------------------------------------------------------
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def _matches(matchers: list[str], labels: Mapping[str, str]) -> bool:
    """Alertmanager's matcher semantics: regexes are anchored, an absent label is the empty string."""
    for matcher in matchers:
        name, op, value = _MATCHER.match(matcher).groups()  # type: ignore[union-attr]
        actual = labels.get(name, "")
        ok = {
            "=": actual == value,
            "!=": actual != value,
            "=~": re.fullmatch(value, actual) is not None,
            "!~": re.fullmatch(value, actual) is None,
        }[op]
        if not ok:
            return False
    return True


def inhibited(config: dict, target: Mapping[str, str], firing: list[Mapping[str, str]]) -> bool:
    for rule in config["inhibit_rules"]:
        if not _matches(rule["target_matchers"], target):
            continue
        for source in firing:
            if source is target or source == target:
                continue
            if _matches(rule["source_matchers"], source) and all(
                source.get(label, "") == target.get(label, "") for label in rule.get("equal", [])
            ):
                return True
    return False


def _alert(alert: str, **extra: str) -> dict[str, str]:
    return {"alertname": alert, **LABELS[alert], **extra}


class TestInhibition:
    CONFIG = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())

    def test_triton_down_silences_every_models_serving_and_quality_symptoms(self) -> None:
        down = _alert("TritonDown")
        for alert in ("TritonInferenceFailures", "TritonHighP99Latency", "TritonNoTraffic", "ModelLowConfidence",
                      "ModelUnknownTokenSpike", "ModelEstimatedAccuracyLow"):  # fmt: skip
            for model in ("textclf", "other"):
                target = _alert(alert, model=model)
                assert inhibited(self.CONFIG, target, [down, target]), alert
        # Not symptoms of the server: drift of the inputs, accuracy on labels, the pipeline.
        for alert in ("ModelDriftScoreHigh", "ModelAccuracyLow", *sorted(META)):
            assert not inhibited(self.CONFIG, _alert(alert), [down]), alert
        assert not inhibited(self.CONFIG, down, [down])

    def test_a_failing_model_silences_its_own_follow_on_alerts_only(self) -> None:
        failing = _alert("TritonInferenceFailures", model="a")
        for alert in (
            "TritonHighP99Latency",
            "TritonNoTraffic",
            "ModelLowConfidence",
            "ModelEstimatedAccuracyLow",
        ):
            assert inhibited(self.CONFIG, _alert(alert, model="a"), [failing]), alert
            assert not inhibited(self.CONFIG, _alert(alert, model="b"), [failing]), alert
        assert not inhibited(self.CONFIG, _alert("ModelDriftScoreHigh", model="a"), [failing])

    def test_grafanas_copy_is_dropped_while_prometheus_fires_the_same_alert(self) -> None:
        prometheus = _alert("ModelLowConfidence", model="a")
        copy = {**prometheus, "grafana_folder": "pitcrew"}
        assert inhibited(self.CONFIG, copy, [prometheus, copy])
        assert not inhibited(self.CONFIG, prometheus, [prometheus, copy])
        assert not inhibited(self.CONFIG, {**copy, "model": "b"}, [prometheus])
        assert not inhibited(self.CONFIG, copy, [copy])

    def test_every_matcher_is_understood(self) -> None:
        for rule in self.CONFIG["inhibit_rules"]:
            for matcher in rule["source_matchers"] + rule["target_matchers"]:
                assert _MATCHER.match(matcher), matcher


# Grafana ------------------------------------------------------------------------------------------
def _grafana_matches(matchers: list[list[str]], labels: Mapping[str, str]) -> bool:
    ops = {"=": lambda a, v: a == v, "!=": lambda a, v: a != v,
           "=~": lambda a, v: re.fullmatch(v, a) is not None, "!~": lambda a, v: re.fullmatch(v, a) is None}  # fmt: skip
    return all(ops[op](labels.get(name, ""), value) for name, op, value in matchers)


def grafana_receivers(route: dict, labels: Mapping[str, str]) -> list[str]:
    """The contact points a Grafana notification policy tree picks (Alertmanager's semantics)."""
    found: list[str] = []
    for child in route.get("routes", []):
        if _grafana_matches(child.get("object_matchers", []), labels):
            found.extend(grafana_receivers(child, labels) or [child["receiver"]])
            if not child.get("continue"):
                break
    return found or ([route["receiver"]] if "receiver" in route else [])


class TestGrafanaPolicies:
    POLICY = yaml.safe_load((GRAFANA_ALERTING / "policies.yml").read_text())["policies"][0]
    CONTACT_POINTS = {
        point["name"]: point
        for point in yaml.safe_load((GRAFANA_ALERTING / "contact_points.yml").read_text())["contactPoints"]
    }

    def test_one_policy_tree_and_known_contact_points(self) -> None:
        trees = [
            f for f in GRAFANA_ALERTING.glob("*.yml") if "policies" in (yaml.safe_load(f.read_text()) or {})
        ]
        assert trees == [GRAFANA_ALERTING / "policies.yml"], "Grafana takes one policy tree per organisation"

        def receivers(route: dict) -> set[str]:
            return {route["receiver"]}.union(*(receivers(r) for r in route.get("routes", [])))

        assert receivers(self.POLICY) <= set(self.CONTACT_POINTS)

    def test_alertmanager_contact_point_is_compose_alertmanager(self) -> None:
        (receiver,) = self.CONTACT_POINTS["alertmanager"]["receivers"]
        assert receiver["type"] == "prometheus-alertmanager"
        assert receiver["settings"]["url"] == "${PITCREW_ALERTMANAGER_URL}"
        compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
        assert (
            compose["services"]["grafana"]["environment"]["PITCREW_ALERTMANAGER_URL"]
            == "http://alertmanager:9093"
        )

    @pytest.mark.parametrize("alert", RULES)
    def test_every_alert(self, alert: str) -> None:
        labels = {"alertname": alert, **LABELS[alert], "grafana_folder": "pitcrew"}
        expected = (
            ["alertmanager"]
            if alert in META or not labels.get("model")
            else ["pitcrew-webhook", "alertmanager"]
        )
        assert grafana_receivers(self.POLICY, labels) == expected
