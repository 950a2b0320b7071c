"""The whole local stack, for real: up, every component answers, status, idempotent up, down leaves nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import psutil
import pytest

from pitcrew.stack.components import airflow_admin_password
from pitcrew.stack.runner import Stack
from tests.stack_fixtures import PORT_FIELDS, make_settings, port_open

pytestmark = pytest.mark.integration


def _own_processes(stack: Stack) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is one the stack started."""
    groups = {json.loads(p.read_text())["pid"] for p in stack.registry.run_dir.glob("*.pid")}
    alive = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) in groups:
                alive.append(proc)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return alive


def _prometheus_target_up(url: str, job: str, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        targets = httpx.get(f"{url}/api/v1/targets").json()["data"]["activeTargets"]
        if any(t["labels"]["job"] == job and t["health"] == "up" for t in targets):
            return True
        time.sleep(1)
    return False


def test_stack_up_status_down(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    stack = Stack(settings)
    try:
        statuses = stack.up()
        assert [s.name for s in statuses] == ["mlflow", "triton", "airflow", "alertmanager", "prometheus"]
        assert all(s.health.ok for s in statuses), statuses

        # Airflow REST: health and an authenticated call with the generated admin password.
        health = httpx.get(f"{settings.airflow_url}/api/v2/monitor/health").json()
        assert health["scheduler"]["status"] == "healthy"
        token = httpx.post(
            f"{settings.airflow_url}/auth/token",
            json={"username": "admin", "password": airflow_admin_password(settings)},
        ).json()["access_token"]
        version = httpx.get(
            f"{settings.airflow_url}/api/v2/version", headers={"Authorization": f"Bearer {token}"}
        )
        assert version.status_code == 200 and version.json()["version"].startswith("3.3")

        # MLflow REST.
        experiments = httpx.post(
            f"{settings.mlflow_url}/api/2.0/mlflow/experiments/search", json={"max_results": 5}
        )
        assert experiments.status_code == 200 and "experiments" in experiments.json()

        # Triton: ready and serving metrics.
        assert httpx.get(f"http://{settings.triton_http_url}/v2/health/ready").status_code == 200
        assert "nv_" in httpx.get(settings.triton_metrics_url).text

        # Prometheus scrapes Triton; Alertmanager is ready.
        assert _prometheus_target_up(settings.prometheus_url, "triton")
        assert httpx.get(f"{settings.alertmanager_url}/-/ready").status_code == 200

        # `up` again is idempotent: same processes, nothing restarted.
        def pids() -> dict[str, int]:
            return {p.stem: stack.registry.read(p.stem).pid for p in stack.registry.run_dir.glob("*.pid")}

        before = pids()
        assert len(before) == 8  # mlflow, triton, 4 airflow processes, alertmanager, prometheus
        stack.up()
        assert pids() == before
    finally:
        groups_before = _own_processes(stack)
        stopped = stack.down()

    assert set(stopped) == {"mlflow", "triton", "airflow", "alertmanager", "prometheus"}
    assert groups_before, "the stack should have had live processes before down"
    time.sleep(1)
    assert [p for p in groups_before if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert not any(port_open(getattr(settings, f)) for f in PORT_FIELDS)
    assert list(stack.registry.run_dir.glob("*.pid")) == []
