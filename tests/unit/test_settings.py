from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pitcrew.settings import Settings, get_settings


class TestSettings:
    def test_defaults_do_not_clash(self) -> None:
        settings = Settings()
        ports = [getattr(settings, f) for f in type(settings).model_fields if f.endswith("_port")]
        assert len(ports) == len(set(ports)) == 8

    def test_env_prefix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PITCREW_MLFLOW_PORT", "31234")
        monkeypatch.setenv("PITCREW_HOME", "/tmp/somewhere")
        get_settings.cache_clear()
        try:
            settings = get_settings()
            assert settings.mlflow_port == 31234
            assert settings.mlflow_url == "http://127.0.0.1:31234"
            assert settings.home_dir == Path("/tmp/somewhere")
        finally:
            get_settings.cache_clear()

    def test_clashing_ports_are_named(self) -> None:
        with pytest.raises(ValidationError, match="PITCREW_TRITON_GRPC_PORT and PITCREW_TRITON_HTTP_PORT"):
            Settings(triton_http_port=30000, triton_grpc_port=30000)

    def test_port_out_of_range(self) -> None:
        with pytest.raises(ValidationError, match="outside 1..65535"):
            Settings(prometheus_port=70000)

    def test_as_env_round_trips(self, tmp_path: Path) -> None:
        settings = Settings(home=tmp_path, airflow_port=31000, webhook_token="s3cret")
        env = settings.as_env()
        assert env["PITCREW_AIRFLOW_PORT"] == "31000"
        assert env["PITCREW_WEBHOOK_TOKEN"] == "s3cret"
        rebuilt = Settings(**{k.removeprefix("PITCREW_").lower(): v for k, v in env.items()})
        assert rebuilt.airflow_port == 31000
        assert rebuilt.home_dir == tmp_path.resolve()

    def test_repository_defaults_under_home(self, tmp_path: Path) -> None:
        assert Settings(home=tmp_path).repository_dir == tmp_path / "model_repository"
