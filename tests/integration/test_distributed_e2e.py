"""The production topology on this machine: `pitcrew stack up --profile distributed`, then the whole loop.

PostgreSQL and Redis from Debian, Airflow with the CeleryExecutor and two Celery workers (queues
``default`` and ``gpu``), MLflow on PostgreSQL, Triton, Prometheus and Alertmanager. An alert posted to
the webhook starts the maintenance run; the test proves the routing: ``fine_tune`` and ``compile`` run on
the ``gpu``-queue worker (the CPU stands in for the GPU), every other task on the ``default`` one, and no
request of the background traffic fails while Triton swaps.

The stack is started and stopped with the README's commands, as a user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from pitcrew import registry
from pitcrew.alerts.client import alert_entry, alertmanager_body, auth_headers
from pitcrew.demo import BackgroundTraffic
from pitcrew.settings import Settings
from pitcrew.stack.components import webhook_token
from pitcrew.stack.topology import worker
from tests.pipeline_world import LABELS, RUN_TIMEOUT_S, World
from tests.stack_fixtures import make_settings
from training.tiny import build_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MODEL, DAG_ID = "textclf", "pitcrew_maintenance_textclf"
GPU_TASKS = ("fine_tune", "compile")


def _models_file(home: Path, tiny: Path) -> Path:
    """One model whose data, inference log and feedback live on the shared storage (the stack home)."""
    entry = {
        "name": MODEL, "runtime": "python-onnxruntime", "base_model": str(tiny), "labels": LABELS,
        "schedule": None, "approvers": ["approver"],
        # The webhook's alert is this day's one automatic run; Prometheus' own alerts (after `for: 10m`)
        # and the watch poller's findings are refused by the cap and cannot queue runs behind it.
        "max_auto_runs_per_day": 1,
        "train_data": "data/textclf/train.parquet", "golden_data": "data/textclf/golden.parquet",
        "inference_log": "log/textclf", "feedback": "feedback/textclf",
        "thresholds": {
            "window_hours": 1, "min_window_rows": 50, "approval_timeout_h": 1, "canary_initial_delay_s": 6,
            "canary_interval_s": 2, "canary_count": 3, "canary_min_confidence": 0.0, "max_golden_drop": 0.2,
            "min_accuracy_gain": -0.05,
        },
    }  # fmt: skip
    path = home / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}, sort_keys=False))
    return path


def _pitcrew(settings: Settings, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """A `pitcrew` command as the README gives it, with this test's settings in the environment."""
    env = {**os.environ, **settings.as_env()}
    command = [str(Path(sys.executable).parent / "pitcrew"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def _processes_under(home: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(home) in text and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {text[:160]}")
    return found


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # PostgreSQL runs as the `postgres` user, which must be able to enter every folder above its data
    # directory: pytest's own temporary folder is private to root, so this test makes its own.
    root = Path(tempfile.mkdtemp(prefix="pitcrew-distributed-"))
    root.chmod(0o711)
    home = root / "home"
    home.mkdir()
    tiny = build_tiny_model(root / "tiny-base", LABELS, hidden_size=32, layers=2)
    settings = make_settings(home, models_file=_models_file(home, tiny), postgres_data=root / "postgres")
    try:
        up = _pitcrew(settings, "stack", "up", "--profile", "distributed")
        assert up.returncode == 0, up.stdout + up.stderr
        status = _pitcrew(settings, "stack", "status")  # no --profile: the one it was brought up with
        assert status.returncode == 0, status.stdout + status.stderr
        for component in ("postgres", "redis", "worker-default", "worker-gpu", "airflow", "mlflow"):
            assert any(line.startswith(component) and "healthy" in line for line in status.stdout.splitlines())
        world = World(settings)
        world.prepare(MODEL)
        yield world
    finally:
        down = _pitcrew(settings, "stack", "down")
        left = _processes_under(home) + _processes_under(root / "postgres")
        shutil.rmtree(root, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not left, f"`pitcrew stack down` left processes behind: {left}"


def test_alert_to_promotion_with_gpu_tasks_on_the_gpu_worker(world: World) -> None:
    settings = world.settings
    labels = {"alertname": "ModelDriftScoreHigh", "model": MODEL, "severity": "warning"}
    body = alertmanager_body([alert_entry(labels)])
    response = httpx.post(
        f"{settings.airflow_url}/pitcrew/alerts", content=body,
        headers=auth_headers(body, webhook_token(settings)), timeout=30,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    (run_id,) = response.json()["run_ids"]
    assert world.admin.dag_run(DAG_ID, run_id)["conf"]["trigger"] == "alert"

    world.admin.wait_for_task(DAG_ID, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
    with BackgroundTraffic(
        settings.triton_http_url, MODEL, world.data[MODEL]["eval_b"], interval_s=0.3
    ) as traffic:
        world.approver.respond(DAG_ID, run_id, "approval", "Approve")
        state = world.admin.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT_S)
        assert state == "success", world.admin.task_states(DAG_ID, run_id)
    assert traffic.result.sent > 0 and traffic.result.failed == 0, traffic.result

    # Where each task ran: queue from the DAG, worker name recorded by the worker that ran it.
    instances = world.admin.tasks.get_task_instances(DAG_ID, run_id, limit=100).task_instances
    ran = {ti.task_id: ti for ti in instances if ti.state is not None and ti.state.value == "success"}
    for task_id in ("data_quality", "drift", "fine_tune", "evaluate", "compile", "register", "hot_swap",
                    "canary", "promote"):  # fmt: skip
        assert task_id in ran, (task_id, sorted(ran))
    for task_id, ti in ran.items():
        expected = worker("gpu") if task_id in GPU_TASKS else worker("default")
        assert (ti.queue, ti.hostname) == (expected.queue, expected.worker_name), (task_id, ti.queue, ti.hostname)

    assert world.admin.xcom_value(DAG_ID, run_id, "record_outcome")["outcome"] == "deployed"
    assert registry.alias_version(world.mlflow, MODEL, registry.CHAMPION) == 2
    assert {p.version for p in world.triton.classify(MODEL, ["where is my parcel"])} == {"2"}
