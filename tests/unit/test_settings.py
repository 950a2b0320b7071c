from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pitcrew.settings import Settings, get_settings


class TestSettings:
    def test_defaults_do_not_clash(self) -> None:
        settings = Settings()
        ports = [getattr(settings, f) for f in type(settings).model_fields if f.endswith("_port")]
        assert len(ports) == len(set(ports)) == 10
        assert {settings.postgres_port, settings.redis_port} <= set(ports)

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

    def test_as_env_round_trips(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Child processes read the settings back from the environment as_env() writes."""
        settings = Settings(home=tmp_path, airflow_port=31000, webhook_token="s3cret", grafana_token="gr4fana")
        env = settings.as_env()
        assert env["PITCREW_AIRFLOW_PORT"] == "31000"
        assert env["PITCREW_WEBHOOK_TOKEN"] == "s3cret"
        assert env["PITCREW_GRAFANA_TOKEN"] == "gr4fana"
        rebuilt = _from_env(monkeypatch, env)
        assert rebuilt.airflow_port == 31000
        assert rebuilt.home_dir == tmp_path.resolve()
        assert rebuilt.webhook_token.get_secret_value() == "s3cret"
        assert rebuilt.grafana_token.get_secret_value() == "gr4fana"
        assert "gr4fana" not in repr(rebuilt)  # a secret, never printed
        assert rebuilt.shared_dirs == []

    def test_shared_dirs_round_trip_as_json(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        settings = Settings(home=tmp_path / "home", shared_dirs=[Path("nfs/a"), tmp_path / "b"])
        env = settings.as_env()
        assert json.loads(env["PITCREW_SHARED_DIRS"]) == [str(tmp_path / "nfs" / "a"), str(tmp_path / "b")]
        rebuilt = _from_env(monkeypatch, env)
        assert rebuilt.shared_dirs == [tmp_path / "nfs" / "a", tmp_path / "b"]
        assert rebuilt.shared_roots == [tmp_path / "nfs" / "a", tmp_path / "b"]

    def test_shared_dirs_env_is_json(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PITCREW_SHARED_DIRS", json.dumps([str(tmp_path / "x")]))
        assert Settings().shared_roots == [tmp_path / "x"]

    def test_default_shared_roots_are_home_and_repository(self, tmp_path: Path) -> None:
        settings = Settings(home=tmp_path / "home")
        assert settings.shared_dirs == []
        assert settings.shared_roots == [tmp_path / "home", tmp_path / "home" / "model_repository"]
        elsewhere = Settings(home=tmp_path / "home", model_repository=tmp_path / "repo")
        assert elsewhere.shared_roots == [tmp_path / "home", tmp_path / "repo"]

    def test_declared_shared_dirs_replace_the_default(self, tmp_path: Path) -> None:
        settings = Settings(home=tmp_path / "home", shared_dirs=[tmp_path / "nfs"])
        assert settings.shared_roots == [tmp_path / "nfs"]

    def test_secrets_path_default_and_override(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        assert Settings(home=tmp_path / "home").secrets_path == tmp_path / "home" / "secrets"
        monkeypatch.chdir(tmp_path)
        assert Settings(home=tmp_path / "home", secrets_dir=Path("vault")).secrets_path == tmp_path / "vault"
        monkeypatch.setenv("PITCREW_SECRETS_DIR", str(tmp_path / "run-secrets"))
        assert Settings(home=tmp_path / "home").secrets_path == tmp_path / "run-secrets"

    def test_airflow_task_url_defaults_to_the_local_url(self) -> None:
        assert Settings(airflow_port=31080).airflow_task_url == "http://127.0.0.1:31080"
        internal = Settings(airflow_internal_url="http://airflow-api-server:8080")
        assert internal.airflow_task_url == "http://airflow-api-server:8080"

    def test_postgres_data_default_and_override(self, tmp_path: Path) -> None:
        assert Settings(home=tmp_path / "home").postgres_data_dir == tmp_path / "home" / "postgres"
        assert Settings(postgres_data=tmp_path / "pg").postgres_data_dir == tmp_path / "pg"

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"postgres_port": 28080}, "PITCREW_POSTGRES_PORT and PITCREW_AIRFLOW_PORT"),
            ({"redis_port": 25432}, "PITCREW_REDIS_PORT and PITCREW_POSTGRES_PORT"),
            ({"redis_port": 29094}, "PITCREW_REDIS_PORT and PITCREW_ALERTMANAGER_CLUSTER_PORT"),
        ],
    )
    def test_datastore_ports_must_be_distinct(self, fields: dict[str, int], message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            Settings(**fields)

    def test_datastore_ports_in_range(self) -> None:
        with pytest.raises(ValidationError, match="outside 1..65535"):
            Settings(redis_port=0)

    def test_repository_defaults_under_home(self, tmp_path: Path) -> None:
        assert Settings(home=tmp_path).repository_dir == tmp_path / "model_repository"


def _from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings as a child process started with ``env`` reads them."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()
