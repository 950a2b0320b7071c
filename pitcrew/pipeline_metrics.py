"""Pipeline metrics for Prometheus, written by tasks as a textfile the webhook plugin serves.

Tasks run in short-lived worker processes, so counters cannot live in memory: each model keeps a small
JSON state beside its textfile, updated under a file lock, and the textfile is rewritten atomically
(``<home>/metrics/pipeline_<model>.prom``). The plugin appends every ``*.prom`` file to
``GET /pitcrew/metrics``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from filelock import FileLock
from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

from pitcrew.pipeline.outcome import OUTCOMES


def _paths(metrics_dir: Path, model: str) -> tuple[Path, Path, Path]:
    return (
        metrics_dir / "state" / f"{model}.json",
        metrics_dir / "state" / f"{model}.lock",
        metrics_dir / f"pipeline_{model}.prom",
    )


def _empty_state() -> dict:
    return {
        "runs": dict.fromkeys(OUTCOMES, 0),
        "rollbacks": 0,
        "training_device_seconds": {},
        "alert_to_deploy_seconds": None,
        "approval_wait_seconds": None,
        "last_success_timestamp_seconds": None,
    }


def record(
    metrics_dir: Path,
    model: str,
    *,
    outcome: str | None = None,
    rollback: bool = False,
    training_seconds: float | None = None,
    device: str | None = None,
    alert_to_deploy_s: float | None = None,
    approval_wait_s: float | None = None,
) -> dict:
    """Fold one event into the model's metrics and rewrite its textfile; returns the new state."""
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"unknown run outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    state_path, lock_path, prom_path = _paths(metrics_dir, model)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=30):
        state = json.loads(state_path.read_text()) if state_path.exists() else _empty_state()
        for known in OUTCOMES:  # a state written before an outcome existed still exports it as 0
            state["runs"].setdefault(known, 0)
        if outcome is not None:
            state["runs"][outcome] = state["runs"].get(outcome, 0) + 1
            if outcome in ("deployed", "no_drift", "nothing_to_do"):
                state["last_success_timestamp_seconds"] = time.time()
        if rollback:
            state["rollbacks"] += 1
        if training_seconds is not None:
            key = device or "cpu"
            state["training_device_seconds"][key] = (
                state["training_device_seconds"].get(key, 0.0) + training_seconds
            )
        if alert_to_deploy_s is not None:
            state["alert_to_deploy_seconds"] = alert_to_deploy_s
        if approval_wait_s is not None:
            state["approval_wait_seconds"] = approval_wait_s
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(state_path)
        write_to_textfile(str(prom_path), _registry(model, state))
    return state


def _registry(model: str, state: dict) -> CollectorRegistry:
    registry = CollectorRegistry()
    runs = Counter(
        "pitcrew_pipeline_runs", "Maintenance runs by outcome.", ["model", "outcome"], registry=registry
    )
    for outcome, count in state["runs"].items():
        runs.labels(model, outcome).inc(count)
    rollbacks = Counter(
        "pitcrew_rollbacks",
        "Rollbacks to the previous champion (automatic or approved).",
        ["model"],
        registry=registry,
    )
    rollbacks.labels(model).inc(state["rollbacks"])
    device_seconds = Counter(
        "pitcrew_training_device_seconds", "Seconds spent fine-tuning, by device (the cost of retraining).",
        ["model", "device"], registry=registry,
    )  # fmt: skip
    for device, seconds in state["training_device_seconds"].items():
        device_seconds.labels(model, device).inc(seconds)
    for name, key, doc in (
        (
            "pitcrew_alert_to_deploy_seconds",
            "alert_to_deploy_seconds",
            "From the alert's start to the new version serving (last incident).",
        ),
        (
            "pitcrew_approval_wait_seconds",
            "approval_wait_seconds",
            "Time the last approval request waited for a human.",
        ),
        (
            "pitcrew_pipeline_last_success_timestamp_seconds",
            "last_success_timestamp_seconds",
            "When a maintenance run last ended well.",
        ),
    ):
        gauge = Gauge(name, doc, ["model"], registry=registry)
        # Export zero for series we know will exist, so dashboards and absent() rules behave.
        gauge.labels(model).set(state[key] or 0)
    return registry
