"""docker-compose.yml is validated offline by Debian's docker-compose (no Docker engine needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from pitcrew.settings import REPO_ROOT


def _env() -> dict[str, str]:
    example = (REPO_ROOT / "deploy" / ".env.example").read_text()
    env = dict(os.environ)
    for line in example.splitlines():
        if re.match(r"^[A-Z_]+=", line):
            key, _, value = line.partition("=")
            env[key] = value or f"test-{key.lower()}"
    return env


@pytest.fixture(scope="module")
def compose() -> dict:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed; the README's test command installs it (apt-get)")
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "config"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_config_quiet_passes() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "config", "-q"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_missing_secret_is_refused() -> None:
    env = _env()
    del env["POSTGRES_PASSWORD"]
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_production_services(compose: dict) -> None:
    services = compose["services"]
    for name in (
        "postgres", "redis", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
        "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "mlflow", "minio", "triton",
        "prometheus", "alertmanager", "grafana",
    ):  # fmt: skip
        assert name in services, name
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "--queues" in services["airflow-worker"]["command"]
    assert services["airflow-worker"]["command"][-1] == "default"
    assert "gpu" in services["airflow-worker-gpu"]["command"]


def test_gpu_reservations(compose: dict) -> None:
    for name in ("airflow-worker-gpu", "triton"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_triton_explicit_and_shares_repository(compose: dict) -> None:
    triton = compose["services"]["triton"]
    assert "--model-control-mode=explicit" in triton["command"]
    # docker-compose 1.29 prints short syntax: "volume:/path:mode".
    triton_volumes = {v.split(":")[0] for v in triton["volumes"]}
    worker_volumes = {v.split(":")[0] for v in compose["services"]["airflow-worker-gpu"]["volumes"]}
    assert "model-repository" in triton_volumes & worker_volumes


def test_mounted_configs_are_valid() -> None:
    promtool = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(REPO_ROOT / "deploy/prometheus/prometheus.compose.yml")],
        capture_output=True,
        text=True,
    )
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    amtool = subprocess.run(
        ["amtool", "check-config", str(REPO_ROOT / "deploy/alertmanager/alertmanager.compose.yml")],
        capture_output=True,
        text=True,
    )
    assert amtool.returncode == 0, amtool.stdout + amtool.stderr
