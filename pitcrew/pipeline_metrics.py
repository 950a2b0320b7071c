"""Pipeline metrics for Prometheus, written by tasks as a textfile the webhook plugin serves.

Tasks run in short-lived worker processes, so counters cannot live in memory: each model keeps a small
JSON state beside its textfile, updated under a file lock, and the textfile is rewritten atomically
(``<home>/metrics/pipeline_<model>.prom``). The plugin appends every ``*.prom`` file to
``GET /pitcrew/metrics``.

Besides the counters of finished runs, the state holds what is going on now, for the meta-alerts in
``deploy/prometheus/rules/pitcrew.yml``: the approvals waiting for a human (:func:`approval_waiting`,
:func:`approval_answered`) and when a run of each trigger last ended (``record(..., trigger=...)``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

from pitcrew.pipeline.outcome import OUTCOMES

#: What can start a run (the ``trigger`` param of every pitcrew DAG, dags/pitcrew_dags/common.py).
TRIGGERS = ("schedule", "alert", "watch", "manual")


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
        "last_run_timestamp_seconds": {},
        "approvals_pending": {},
    }


def _update(metrics_dir: Path, model: str, change: Callable[[dict], None]) -> dict:
    """Apply ``change`` to the model's state under its lock, save it, rewrite the textfile; the new state."""
    state_path, lock_path, prom_path = _paths(metrics_dir, model)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=30):
        state = json.loads(state_path.read_text()) if state_path.exists() else _empty_state()
        # A state written by an older version lacks newer keys; every outcome is exported, at 0 if need be.
        for key, value in _empty_state().items():
            state.setdefault(key, value)
        for known in OUTCOMES:
            state["runs"].setdefault(known, 0)
        change(state)
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(state_path)
        write_to_textfile(str(prom_path), _registry(model, state))
    return state


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
    trigger: str | None = None,
    run_id: str | None = None,
) -> dict:
    """Fold one event into the model's metrics and rewrite its textfile; returns the new state.

    :param trigger: what started the run that ended (one of :data:`TRIGGERS`): sets
        ``pitcrew_pipeline_last_run_timestamp_seconds{trigger}`` to now, whatever the outcome.
    :param run_id: the run that ended: an approval it left pending (a crash, a killed run) is dropped,
        since nobody can answer it any more.
    """
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"unknown run outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    if trigger is not None and trigger not in TRIGGERS:
        raise ValueError(f"unknown run trigger {trigger!r}; expected one of {', '.join(TRIGGERS)}")

    def change(state: dict) -> None:
        now = time.time()
        if outcome is not None:
            state["runs"][outcome] = state["runs"].get(outcome, 0) + 1
            if outcome in ("deployed", "no_drift", "nothing_to_do"):
                state["last_success_timestamp_seconds"] = now
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
        if trigger is not None:
            state["last_run_timestamp_seconds"][trigger] = now
        if run_id is not None:
            state["approvals_pending"].pop(run_id, None)

    return _update(metrics_dir, model, change)


def approval_waiting(
    metrics_dir: Path, model: str, run_id: str, timeout_s: float, since: float | None = None
) -> dict:
    """An approval of run ``run_id`` now waits for a human, for at most ``timeout_s`` seconds.

    Exports ``pitcrew_approval_pending_since_timestamp_seconds{model,run_id}`` (``since``, a Unix time;
    default now) and ``pitcrew_approval_timeout_seconds{model,run_id}`` until :func:`approval_answered`
    (or ``record(..., run_id=...)`` at the run's end) removes them. Calling it again for the same run
    (a retried task) keeps the first ``since``. Returns the new state.
    """
    if timeout_s <= 0:
        raise ValueError(f"approval timeout must be positive, got {timeout_s}")

    def change(state: dict) -> None:
        pending = state["approvals_pending"]
        first = pending.get(run_id, {}).get("since")
        start = since if since is not None else time.time()
        pending[run_id] = {
            "since": min(first, start) if first is not None else start,
            "timeout_s": float(timeout_s),
        }

    return _update(metrics_dir, model, change)


def approval_answered(metrics_dir: Path, model: str, run_id: str) -> dict:
    """The approval of run ``run_id`` got an answer (or timed out): its pending series go away.

    Answering one that is not pending changes nothing. Returns the new state.
    """
    return _update(metrics_dir, model, lambda state: state["approvals_pending"].pop(run_id, None))


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
    last_run = Gauge(
        "pitcrew_pipeline_last_run_timestamp_seconds",
        "When a run started by this trigger (schedule, alert, watch, manual) last ended, whatever its outcome.",
        ["model", "trigger"], registry=registry,
    )  # fmt: skip
    for trigger, stamp in state["last_run_timestamp_seconds"].items():
        last_run.labels(model, trigger).set(stamp)
    pending_since = Gauge(
        "pitcrew_approval_pending_since_timestamp_seconds",
        "When each approval still waiting for a human was asked (one series per waiting run).",
        ["model", "run_id"], registry=registry,
    )  # fmt: skip
    pending_timeout = Gauge(
        "pitcrew_approval_timeout_seconds",
        "How long each waiting approval may wait before it counts as a rejection.",
        ["model", "run_id"], registry=registry,
    )  # fmt: skip
    for run_id, pending in sorted(state["approvals_pending"].items()):
        pending_since.labels(model, run_id).set(pending["since"])
        pending_timeout.labels(model, run_id).set(pending["timeout_s"])
    return registry
