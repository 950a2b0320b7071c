from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from airflow.exceptions import AirflowNotFoundException
from airflow.models.connection import Connection
from fastapi import FastAPI

from pitcrew.settings import REPO_ROOT, Settings, get_settings

PLUGIN = REPO_ROOT / "plugins" / "pitcrew_webhook_plugin.py"


@pytest.fixture(scope="module")
def plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pitcrew_webhook_plugin", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PITCREW_HOME", str(tmp_path))
    monkeypatch.setenv("PITCREW_WEBHOOK_TOKEN", "settings-token")
    monkeypatch.setenv("PITCREW_WEBHOOK_HMAC_SECRET", "settings-secret")
    monkeypatch.setenv("PITCREW_GRAFANA_TOKEN", "settings-grafana")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


class TestPitcrewWebhookPlugin:
    def test_mounts_one_fastapi_app_at_pitcrew(self, plugin: ModuleType) -> None:
        (entry,) = plugin.PitcrewWebhookPlugin.fastapi_apps
        assert entry["url_prefix"] == "/pitcrew"
        assert isinstance(entry["app"], FastAPI)
        paths = {route.path for route in entry["app"].routes}
        assert {"/alerts", "/health", "/metrics"} <= paths

    def test_import_reads_no_settings_or_secrets(self, plugin: ModuleType, tmp_path: Path) -> None:
        assert not (Settings(home=tmp_path).home_dir / "secrets").exists()

    def test_secrets_from_settings_without_connection(self, plugin: ModuleType, home: Path, monkeypatch) -> None:
        def missing(conn_id: str) -> Connection:
            raise AirflowNotFoundException(conn_id)

        monkeypatch.setattr(Connection, "get_connection_from_secrets", staticmethod(missing))
        config = plugin._config()
        assert (config.token, config.hmac_secret) == ("settings-token", "settings-secret")
        assert config.grafana_token == "settings-grafana"
        assert config.metrics_dir == home.resolve() / "metrics"

    def test_secrets_from_airflow_connection_win(self, plugin: ModuleType, home: Path, monkeypatch) -> None:
        conn = Connection(conn_id="pitcrew_webhook", conn_type="generic", password="conn-token",
                          extra='{"hmac_secret": "conn-secret", "grafana_token": "conn-grafana"}')  # fmt: skip
        monkeypatch.setattr(Connection, "get_connection_from_secrets", staticmethod(lambda conn_id: conn))
        config = plugin._config()
        assert (config.token, config.hmac_secret) == ("conn-token", "conn-secret")
        assert config.grafana_token == "conn-grafana"

    def test_a_connection_without_grafana_token_falls_back_to_settings(
        self, plugin: ModuleType, home: Path, monkeypatch
    ) -> None:
        conn = Connection(conn_id="pitcrew_webhook", conn_type="generic", password="conn-token",
                          extra='{"hmac_secret": "conn-secret"}')  # fmt: skip
        monkeypatch.setattr(Connection, "get_connection_from_secrets", staticmethod(lambda conn_id: conn))
        config = plugin._config()
        assert (config.token, config.grafana_token) == ("conn-token", "settings-grafana")
