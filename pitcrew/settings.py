"""The one typed settings module of pitcrew.

Every URL, port, path and threshold that code needs comes from here (environment variables with the
``PITCREW_`` prefix, or a ``.env`` file), so nothing is written into DAG files or operators.
Defaults are chosen so the local stack's ports do not clash with each other or with the usual
defaults of the same servers a developer may already run (8080, 5000, 8000, 9090, 9093).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root: the folder that holds dags/, deploy/ and model_repository/.
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """pitcrew settings; each field is read from ``PITCREW_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="PITCREW_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".pitcrew"), description="State, logs and pid files of the local stack.")
    host: str = Field("127.0.0.1", description="Interface every local server binds to.")

    airflow_port: int = Field(28080, description="Airflow API server (UI, REST, webhook plugin).")
    mlflow_port: int = Field(25000, description="MLflow tracking server.")
    triton_http_port: int = Field(28000, description="Triton HTTP/REST endpoint.")
    triton_grpc_port: int = Field(28001, description="Triton gRPC endpoint.")
    triton_metrics_port: int = Field(28002, description="Triton Prometheus metrics endpoint.")
    prometheus_port: int = Field(29090, description="Prometheus server.")
    alertmanager_port: int = Field(29093, description="Alertmanager.")
    alertmanager_cluster_port: int = Field(29094, description="Alertmanager gossip port (bound to host).")
    # The distributed profile only (`pitcrew stack up --profile distributed`).
    postgres_port: int = Field(25432, description="PostgreSQL (distributed profile): Airflow's and MLflow's database.")
    redis_port: int = Field(26379, description="Redis (distributed profile): the Celery broker.")

    models_file: Path = Field(
        REPO_ROOT / "models.yaml", description="The models file (one entry per served model)."
    )
    model_repository: Path | None = Field(
        None, description="Triton model repository; default: <home>/model_repository."
    )
    secrets_dir: Path | None = Field(
        None, description="Folder of secret files (mode 0600), one per secret; default: <home>/secrets."
    )
    shared_dirs: list[Path] = Field(
        default_factory=list,
        description="Storage every worker and Triton mount (JSON list); default: [<home>, model repository].",
    )
    airflow_internal_url: str | None = Field(
        None, description="The API server as tasks reach it (the alert webhook); default: the local URL."
    )
    postgres_data: Path | None = Field(
        None, description="PostgreSQL data directory (distributed profile); default: <home>/postgres."
    )
    triton_core_standin: bool = Field(
        True,
        description="Serve <name>_core ONNX models with the Python-backend stand-in (the bundled Triton has "
        "only the Python backend); false on a Triton with the onnxruntime and tensorrt backends.",
    )
    triton_tensorrt_version: str = Field(
        "", description="TensorRT version of the serving Triton; plans built by another are refused."
    )
    triton_gpu: bool = Field(False, description="Run <name>_core ONNX models on the GPU (KIND_GPU).")
    dags_folder: Path = Field(REPO_ROOT / "dags", description="Airflow DAGs folder.")
    plugins_folder: Path = Field(REPO_ROOT / "plugins", description="Airflow plugins folder.")
    deploy_dir: Path = Field(REPO_ROOT / "deploy", description="Prometheus, Alertmanager and Grafana config.")

    airflow_parallelism: int = Field(4, ge=1, description="Airflow worker processes; low for a 2-core box.")
    startup_timeout_s: float = Field(180.0, gt=0, description="How long `stack up` waits for each component.")
    scrape_interval_s: int = Field(5, ge=1, description="Prometheus scrape and rule evaluation interval.")

    webhook_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token of Alertmanager (and the pitcrew_watch poller) at the alert webhook: "
        "Alertmanager-format bodies only; generated into <secrets> if empty.",
    )
    grafana_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token of Grafana at the alert webhook: signed Grafana-format bodies only, so a "
        "leaked webhook token cannot send them; generated into <secrets> if empty.",
    )
    webhook_hmac_secret: SecretStr = Field(
        SecretStr(""), description="HMAC-SHA256 secret for signed webhook bodies; generated if empty."
    )
    pager: Literal["none", "pagerduty", "slack", "email"] = Field(
        "none",
        description="Who Alertmanager pages (serving health) and tells (drift, quality, the pipeline): the "
        "receivers of deploy/alertmanager/pager/<pager>.yml; their secret is a 0600 file in <secrets>/pager/ "
        "(pagerduty_routing_key, slack_webhook_url or email_password). none: nobody, offline.",
    )
    feedback_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token of POST /pitcrew/feedback alone (labelling systems); empty: the webhook token.",
    )

    @field_validator(
        "airflow_port",
        "mlflow_port",
        "triton_http_port",
        "triton_grpc_port",
        "triton_metrics_port",
        "prometheus_port",
        "alertmanager_port",
        "alertmanager_cluster_port",
        "postgres_port",
        "redis_port",
    )
    @classmethod
    def _port_in_range(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} is outside 1..65535")
        return value

    @model_validator(mode="after")
    def _ports_distinct(self) -> Settings:
        ports = {name: getattr(self, name) for name in type(self).model_fields if name.endswith("_port")}
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(
                    f"PITCREW_{name.upper()} and PITCREW_{seen[port].upper()} both use port {port}"
                )
            seen[port] = name
        return self

    # Derived locations -----------------------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        return self.home.resolve()

    @property
    def repository_dir(self) -> Path:
        return (self.model_repository or self.home_dir / "model_repository").resolve()

    @property
    def secrets_path(self) -> Path:
        return (self.secrets_dir or self.home_dir / "secrets").resolve()

    @property
    def shared_roots(self) -> list[Path]:
        return [p.resolve() for p in self.shared_dirs] or [self.home_dir, self.repository_dir]

    @property
    def airflow_task_url(self) -> str:
        return self.airflow_internal_url or self.airflow_url

    @property
    def postgres_data_dir(self) -> Path:
        return (self.postgres_data or self.home_dir / "postgres").resolve()

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def triton_http_url(self) -> str:
        return f"{self.host}:{self.triton_http_port}"

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.host}:{self.triton_grpc_port}"

    @property
    def triton_metrics_url(self) -> str:
        return f"http://{self.host}:{self.triton_metrics_port}/metrics"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.host}:{self.alertmanager_port}"

    def as_env(self) -> dict[str, str]:
        """These settings as ``PITCREW_*`` variables, for child processes (Airflow tasks, Triton models)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, Path):
                value = value.resolve()
            if isinstance(value, list):  # pydantic-settings reads complex fields as JSON
                value = json.dumps([str(Path(v).resolve()) for v in value])
            env[f"PITCREW_{name.upper()}"] = str(value)
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
