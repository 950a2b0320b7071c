"""Fault injection against the real servers: a server or a worker dies mid-step, and nothing is lost.

Each case stops, kills or breaks one real thing at a chosen moment of one real pipeline step (the Airflow
operator's ``execute``, or the pipeline function it wraps, outside Airflow) and then checks the same
promise: the champion keeps serving, no MLflow alias moves wrongly, no half-published version stays in the
model repository or the registry, and the step ends in a clear state (it succeeds, or fails with a reason
that says whether Airflow retries it, and the retry succeeds).

One MLflow + Triton + Prometheus stack for the module; every test uses its own model name, and a test that
stops or kills a server starts it again before it ends, so the tests do not depend on each other or on
their order.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from pitcrew import registry
from pitcrew.serving.client import TritonControl
from pitcrew.settings import Settings
from pitcrew.stack.processes import _session_members, _signal_session
from pitcrew.stack.runner import Stack
from tests.integration.serving_artifacts import build_artifact
from tests.stack_fixtures import make_settings, port_open, stack_with_env
from tests.unit.operator_context import context_for, in_dag

pytestmark = pytest.mark.integration

LABELS = ["billing", "technical", "account", "shipping"]
MODELS = ("regclf", "swapstaging", "swapcommit", "tuneclf", "canaryclf", "logclf")


@dataclass
class World:
    root: Path
    settings: Settings
    stack: Stack
    artifacts: dict[int, Path]
    mlflow: MlflowClient

    def component(self, name: str):
        return next(c for c in self.stack.components if c.name == name)

    def stop(self, name: str) -> None:
        """Stop a server the way an operator or a crash does: SIGTERM, then SIGKILL after the grace time."""
        assert self.stack._stop_component(self.component(name)), f"{name} was not running"

    def kill(self, name: str) -> None:
        """SIGKILL every process of a server at once (no shutdown, no cleanup)."""
        assert self.stack.registry.running(name), f"{name} was not running"
        world_kill(self.stack, name)

    def start_all(self) -> None:
        """Start what is not running (and healthy) again; wait until it answers."""
        self.stack.up()

    def triton(self) -> TritonControl:
        return TritonControl(self.settings.triton_http_url)


def world_kill(stack: Stack, name: str) -> None:
    """SIGKILL every process of ``name``'s session; return once all are gone and its ports are free (a
    Python-backend stub of Triton may outlive the server by a moment, holding its inherited sockets)."""
    proc = stack.registry.running(name)
    if proc is None:
        return
    ports = next(c.ports for c in stack.components if c.name == name)

    def gone() -> bool:
        _signal_session(proc.pid, signal.SIGKILL)
        return not _session_members(proc.pid) and not any(port_open(port) for port in ports)

    _wait(gone, 30, f"{name} to die and free its ports {ports}", every_s=0.1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("faults")
    artifacts = {v: build_artifact(root / f"artifact-v{v}", LABELS, seed=v) for v in (1, 2)}
    thresholds = {
        "latency_p95_budget_ms": 5000,  # two shared cores: the check is not what these tests are about
        "canary_initial_delay_s": 0, "canary_interval_s": 1.5, "canary_count": 3, "canary_failure_limit": 0,
        "canary_p99_latency_s": 5, "canary_min_confidence": 0.0,
    }  # fmt: skip
    entries = [
        {
            "name": name,
            "labels": LABELS,
            "train_data": str(root / "data" / name / "train.parquet"),
            "inference_log": str(root / "log" / name),
            "feedback": str(root / "feedback" / name),
            "thresholds": thresholds,
            "training": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-2},
        }
        for name in MODELS
    ]
    models_file = root / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    settings = make_settings(root / "home", models_file=models_file)
    connections = {
        "AIRFLOW_CONN_MLFLOW_DEFAULT": {"conn_type": "mlflow", "host": settings.mlflow_url},
        "AIRFLOW_CONN_TRITON_DEFAULT": {
            "conn_type": "triton", "host": settings.host, "port": settings.triton_http_port,
            "extra": {"repository": str(settings.repository_dir)},
        },
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT": {"conn_type": "prometheus", "host": settings.prometheus_url},
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for name, conn in connections.items():
            mp.setenv(name, json.dumps(conn))
        from operators.mlflow_hook import RETRY_ENV_DEFAULTS

        for name, value in RETRY_ENV_DEFAULTS.items():  # what MlflowHook sets in a task's process
            mp.setenv(name, value)
        with stack_with_env(settings, only=("mlflow", "triton", "prometheus")) as stack:
            yield World(
                root=root, settings=settings, stack=stack, artifacts=artifacts,
                mlflow=MlflowClient(tracking_uri=settings.mlflow_url, registry_uri=settings.mlflow_url),
            )  # fmt: skip
            # Nothing here needs a graceful shutdown: Triton waits for idle keep-alive connections and MLflow
            # for its workers, half a minute of CI time; the stack's `down` then finds them gone.
            for name in ("triton", "mlflow"):
                if stack.registry.running(name):
                    world_kill(stack, name)


def _wait(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(every_s)


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; the dict gets its ``result`` or ``error``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _run_step(task: Any, context: dict[str, Any]) -> tuple[Any, BaseException | None]:
    """``execute`` once, as one Airflow try: (result, None) or (None, the exception that ended the try)."""
    try:
        return task.execute(context), None
    except Exception as exc:  # noqa: BLE001 - the test judges it
        return None, exc


def _assert_retryable(exc: BaseException) -> None:
    """A try that failed because a server was away must be retried by Airflow, with a reason that says so."""
    from airflow.sdk.exceptions import AirflowFailException

    from operators.errors import is_transient

    assert not isinstance(exc, AirflowFailException), f"a server outage failed the task for good: {exc}"
    assert is_transient(exc), f"not a transient error, so Airflow would not retry it: {type(exc).__name__}: {exc}"
    assert str(exc), "the failure gives no reason"


def _versions(client: MlflowClient, model: str) -> dict[int, Any]:
    return {int(mv.version): mv for mv in client.search_model_versions(f"name='{model}'")}


def _aliases(client: MlflowClient, model: str) -> dict[str, int | None]:
    return {alias: registry.alias_version(client, model, alias)
            for alias in (registry.CHAMPION, registry.CHALLENGER, registry.PREVIOUS)}  # fmt: skip


def _champion_in_registry(world: World, model: str) -> None:
    """Version 1 registered and promoted (the alias no fault may move)."""
    registry.register_version(world.mlflow, model, serving_dir=world.artifacts[1], tags={"trigger": "bootstrap"})
    registry.promote(world.mlflow, model, 1, approver="ann")


# ------------------------------------------------------------------------------------------------------
# MLflow stopped during register
# ------------------------------------------------------------------------------------------------------
def test_mlflow_stopped_during_register(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from operators.registry_operators import RegisterModelVersionOperator

    model = "regclf"
    _champion_in_registry(world, model)
    checkpoint = world.root / "regclf-checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    workspace = world.root / "regclf-run"
    workspace.mkdir()
    pd.DataFrame({"text": ["my invoice", "the app crashes"], "label": ["billing", "technical"]}).to_parquet(
        workspace / "train.parquet"
    )

    # The fault: MLflow stops right after the version was created, before the ``challenger`` alias is set
    # (the last call of register, so the version exists but is not published yet); it starts again
    # from another thread two seconds later.
    original = MlflowClient.set_registered_model_alias
    restarts: list[tuple[threading.Thread, dict]] = []

    def stop_mlflow_first(self: MlflowClient, name: str, alias: str, version: Any) -> None:
        if name == model and not restarts:
            world.kill("mlflow")
            restarts.append(_in_thread(lambda: (time.sleep(2.0), world.start_all())))
        return original(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", stop_mlflow_first)
    task = in_dag(lambda: RegisterModelVersionOperator(
        task_id="register", model=model, checkpoint=str(checkpoint), artifact=str(world.artifacts[2]),
        compile_report={"runtime": "python-onnxruntime"}, evaluation={"decision": "promote"},
        window={"start": "a", "end": "b"}, parent_version=1, trigger="manual", workspace=str(workspace),
    ))  # fmt: skip
    context = context_for(task)
    result, error = _run_step(task, context)
    assert restarts, f"register ended before the fault: {error!r}"
    ((thread, restarted),) = restarts
    thread.join(timeout=300)
    assert "error" not in restarted, f"MLflow did not start again: {restarted.get('error')}"
    if error is not None:  # MLflow's own retries gave up before it was back: Airflow retries the task
        _assert_retryable(error)
        result, error = _run_step(task, context)
        assert error is None, f"the retry after MLflow came back failed: {error}"

    version = result["version"]
    assert _aliases(world.mlflow, model) == {"champion": 1, "challenger": version, "previous": None}
    versions = _versions(world.mlflow, model)
    # nothing half-published stays: every version but the champion is the one the step returned
    assert sorted(versions) == [1, version], (
        f"versions {sorted(versions)}: a try left a version behind that no alias names"
    )
    assert versions[version].tags["airflow_dag_run_id"] == context["run_id"]
    served = registry.download(world.mlflow, model, version, registry.SERVING_PATH, world.root / "regclf-dl")
    assert (served / "model.onnx").read_bytes() == (world.artifacts[2] / "model.onnx").read_bytes()
    runs = world.mlflow.search_runs([registry.experiment_id(world.mlflow, model)])
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], "a register run was left RUNNING"


# ------------------------------------------------------------------------------------------------------
# Triton killed during hot_swap
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", ["staging", "commit"])
def test_triton_killed_during_hot_swap(world: World, phase: str) -> None:
    from operators.triton_hook import TritonHook
    from operators.triton_operators import TritonHotSwapOperator

    model = f"swap{phase}"
    repository = world.settings.repository_dir
    TritonHook().deploy(model, 1, world.artifacts[1])
    triton = world.triton()
    assert triton.classify(model, ["where is my parcel"])[0].version == "1"

    task = in_dag(lambda: TritonHotSwapOperator(
        task_id="hot_swap", model=model, version=2, artifact=str(world.artifacts[2]), approval_task_id=None,
    ))  # fmt: skip
    context = context_for(task)
    thread, outcome = _in_thread(lambda: task.execute(context))
    # The fault: SIGKILL Triton while version 2 loads, either under its staging name (before it was
    # verified) or into the live model (the commit), then start it again.
    staging = repository / f"{model}__staging"
    _wait(staging.exists, 120, "the swap to stage version 2", every_s=0.02)
    if phase == "commit":  # the staged copy is verified and removed just before the commit's load
        _wait(lambda: not staging.exists(), 120, "the swap to verify version 2", every_s=0.02)
    world.kill("triton")
    world.start_all()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the swap did not end after Triton came back"

    # The try fails, cleanly: Airflow retries it, what served before serves again, and nothing of version 2
    # is left published, staged or loaded (the restarted Triton loads no staging model).
    assert "error" in outcome, f"the swap went on through Triton's restart: {outcome}"
    _assert_retryable(outcome["error"])
    assert "version 1 keeps serving" in str(outcome["error"])
    assert triton.classify(model, ["where is my parcel"])[0].version == "1", "the champion does not serve"
    assert triton.ready_versions(model) == [1], "the challenger was left loaded"
    assert not (repository / model / "2").exists(), "the half-published version 2 stayed in the repository"
    assert not staging.exists(), "the staging model's folder stayed in the repository"
    assert "READY" not in triton.version_states(f"{model}__staging").values(), "the staging model is loaded"

    result, error = _run_step(task, context)  # Airflow's retry
    assert error is None, f"the retry after Triton came back failed: {error}"
    assert result["version"] == 2
    # The retry is one clean swap: version 2 serves, nothing is left staged, and what is on disk is what a
    # restarted Triton would serve.
    assert triton.classify(model, ["where is my parcel"])[0].version == "2"
    assert triton.ready_versions(model) == [2]
    assert not staging.exists(), "the staging model's folder stayed in the repository"
    assert "READY" not in triton.version_states(f"{model}__staging").values(), "the staging model stayed loaded"
    assert sorted(p.name for p in (repository / model).iterdir() if p.is_dir()) == ["1", "2"]
    assert "versions: 2" in (repository / model / "config.pbtxt").read_text().replace("[", "").replace("]", "")


# ------------------------------------------------------------------------------------------------------
# the worker killed during fine_tune
# ------------------------------------------------------------------------------------------------------
KILLED_FINE_TUNE = """
import os, signal, sys
from pathlib import Path

import training.finetune as finetune_module
from pitcrew.models_file import load_models_file
from pitcrew.pipeline.model_steps import fine_tune
from pitcrew.pipeline.workspace import Workspace

save = finetune_module.save_checkpoint

def save_then_die(*args, **kwargs):  # the worker dies right after its first checkpoint: no cleanup runs
    save(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

finetune_module.save_checkpoint = save_then_die
entry = load_models_file(Path(sys.argv[1])).get("tuneclf")
fine_tune(entry, Workspace(Path(sys.argv[2])), base_model=sys.argv[3])
"""


def test_worker_killed_during_fine_tune(world: World) -> None:
    import torch

    from operators.model_operators import FineTuneOperator
    from training.demo_data import write_demo_splits
    from training.tiny import build_tiny_model

    base = build_tiny_model(world.root / "tuneclf-base", LABELS)
    data = write_demo_splits(world.root / "tuneclf-data", n_train=320, n_eval=64, n_golden=8, seed=3)
    workspace = world.root / "tuneclf-run"
    workspace.mkdir()
    shutil.copy(data["a_train"], workspace / "train.parquet")
    shutil.copy(data["a_eval"], workspace / "eval.parquet")

    first_try = subprocess.run(
        [sys.executable, "-c", KILLED_FINE_TUNE, str(world.settings.models_file), str(workspace), str(base)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert first_try.returncode == -signal.SIGKILL, f"the worker was not killed: {first_try.stderr[-2000:]}"
    checkpoint = workspace / "finetune.ckpt"
    saved = torch.load(checkpoint / "checkpoint.pt", map_location="cpu", weights_only=True)["state"]
    assert saved["step"] == 20  # 320 rows in batches of 16: the checkpoint after the first epoch
    assert not (workspace / "challenger").exists(), "the killed try left a half-written model"

    task = in_dag(lambda: FineTuneOperator(
        task_id="fine_tune", model="tuneclf", base_model=str(base), workspace=str(workspace),
    ))  # fmt: skip
    result, error = _run_step(task, context_for(task))  # Airflow's retry of the task
    assert error is None, f"the retry failed: {error}"
    summary = result["summary"]
    assert summary["resumed_from_step"] == 20, f"the retry did not resume from the checkpoint: {summary}"
    assert summary["steps"] == 40 and summary["stop_reason"] == "max_steps"
    trained = json.loads((workspace / "challenger" / "training_summary.json").read_text())
    assert trained["resumed_from_step"] == 20 and trained["steps"] == 40
    assert not checkpoint.exists(), "the checkpoint outlived the finished fine-tune"


# ------------------------------------------------------------------------------------------------------
# Prometheus stopped during the canary
# ------------------------------------------------------------------------------------------------------
def test_prometheus_stopped_during_canary(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import TaskAwaitingInput

    import operators.canary_trigger as canary_trigger_module
    from operators.approval_operators import CanaryDecisionOperator
    from operators.canary_operators import CanaryAnalysisOperator
    from operators.canary_trigger import CanaryTrigger
    from operators.triton_hook import TritonHook
    from pitcrew.pipeline.release_steps import canary_metrics, canary_policy

    model = "canaryclf"
    _champion_in_registry(world, model)
    registry.register_version(world.mlflow, model, serving_dir=world.artifacts[2], tags={"parent_version": "1"})
    TritonHook().deploy(model, 2, world.artifacts[2])  # the swap happened: version 2 serves, on canary
    triton = world.triton()
    stop_traffic = threading.Event()

    def traffic() -> None:
        sender = world.triton()  # a client of its own: tritonclient's gevent client stays in its thread
        while not stop_traffic.is_set():
            sender.classify(model, ["where is my parcel", "refund please"])
            time.sleep(0.1)

    sender, sent = _in_thread(traffic)
    recorded: list[dict] = []
    monkeypatch.setattr("airflow.providers.standard.operators.hitl.upsert_hitl_detail",
                        lambda **kwargs: recorded.append(kwargs))  # fmt: skip
    try:
        entry_metrics = canary_metrics(_entry(world, model), 2)

        def answered() -> bool:  # Prometheus has scraped the new version's traffic: the canary can measure
            return all(_query(world, m.query) for m in entry_metrics)

        _wait(answered, 60, "Prometheus to answer every canary query for version 2", every_s=0.5)

        # The fault: Prometheus stops once the first round of measurements (one per metric) is in.
        original = canary_trigger_module.query_vector
        queries: list[str] = []

        async def stop_after_first_round(client: httpx.AsyncClient, url: str, query: str):
            if len(queries) == len(entry_metrics):
                await asyncio.to_thread(world.stop, "prometheus")
            queries.append(query)
            return await original(client, url, query)

        monkeypatch.setattr(canary_trigger_module, "query_vector", stop_after_first_round)
        canary = in_dag(lambda: CanaryAnalysisOperator(task_id="canary", model=model, version=2))
        context = context_for(canary)
        trigger = CanaryTrigger(metrics=[asdict(m) for m in entry_metrics],
                                policy=asdict(canary_policy(_entry(world, model))))  # fmt: skip

        async def first_event() -> Any:
            async for event in trigger.run():
                return event.payload
            return None

        event = asyncio.run(first_event())
        verdict = canary.execute_complete(context, event)
    finally:
        stop_traffic.set()
        sender.join(timeout=30)
        world.start_all()
    assert "error" not in sent, f"serving failed during the canary: {sent.get('error')}"

    assert verdict["phase"] == "inconclusive", verdict
    assert "no data" in verdict["reason"] and "a human must decide" in verdict["reason"]
    phases = [m["phase"] for m in verdict["measurements"]]
    n = len(entry_metrics)
    assert phases[:n] == ["successful"] * n, f"the first round (Prometheus up) should have measured: {verdict}"
    assert set(phases[n:]) == {"inconclusive"}, f"rounds without Prometheus must be no data: {verdict}"

    decision = in_dag(lambda: CanaryDecisionOperator(task_id="canary_decision", model=model, version=2),
                      "promote", "rollback")  # fmt: skip
    decision_context = context_for(decision, canary=verdict)
    decision_context["ti"].task = decision
    with pytest.raises(TaskAwaitingInput):  # the human review branch: the task parks for an answer
        decision.execute(decision_context)
    (request,) = recorded
    assert request["body"].startswith(f"### Canary of `{model}` version 2: inconclusive")
    assert request["defaults"] == ["Roll back"]
    # nothing was promoted nor rolled back while the human decides
    assert _aliases(world.mlflow, model) == {"champion": 1, "challenger": 2, "previous": None}
    assert "promoted_at" not in registry.get_version(world.mlflow, model, 2).tags
    assert triton.ready_versions(model) == [2]


def _entry(world: World, model: str):
    from pitcrew.models_file import load_models_file

    return load_models_file(world.settings.models_file).get(model)


def _query(world: World, expr: str) -> list[float]:
    response = httpx.get(f"{world.settings.prometheus_url}/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    values = [float(s["value"][1]) for s in response.json()["data"]["result"]]
    return [v for v in values if v == v]  # NaN is no answer


# ------------------------------------------------------------------------------------------------------
# the inference-log folder unwritable, then the disk full
# ------------------------------------------------------------------------------------------------------
def _log_failures(world: World, model: str) -> float:
    text = httpx.get(world.settings.triton_metrics_url, timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "pitcrew_inference_log_failures_total" and sample.labels.get("model") == model
    )


def _send(triton: TritonControl, model: str, n: int, prefix: str) -> list[str]:
    versions = []
    for i in range(n):
        (answer,) = triton.classify(model, [f"{prefix} {i}: my invoice was charged twice"])
        versions.append(answer.version)
    return versions


def test_inference_log_unwritable_serving_goes_on(world: World) -> None:
    from monitoring.inference_log import read_inference_log
    from operators.triton_hook import TritonHook

    model = "logclf"
    log_root = Path(_entry(world, model).inference_log)
    log_root.parent.mkdir(parents=True, exist_ok=True)
    # Unwritable even for root: a regular file where the log's folder should be.
    log_root.write_text("not a folder")
    TritonHook().deploy(model, 1, world.artifacts[1])
    triton = world.triton()
    started = datetime.now(UTC)

    assert _send(triton, model, 10, "unwritable") == ["1"] * 10  # every request served
    _wait(lambda: _log_failures(world, model) >= 10, 30, "the 10 lost log rows to be counted", every_s=0.5)

    # The disk full: a 64 KiB tmpfs at the log folder, filled up (where this machine lets us mount one).
    log_root.unlink()
    log_root.mkdir()
    mount = shutil.which("mount")
    mounting = mount is not None and subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(log_root)], capture_output=True, text=True
    )  # fmt: skip
    mounted = bool(mounting) and mounting.returncode == 0
    # Root (as in CI) must get its tmpfs, or this case would pass without running; others cannot mount.
    assert mounted or os.geteuid() != 0, f"root could not mount a tmpfs: {mounting and mounting.stderr}"
    try:
        if mounted:
            with pytest.raises(OSError, match="No space left"), open(log_root / "filler", "wb") as filler:
                while True:
                    filler.write(b"\0" * 4096)
                    filler.flush()
            before = _log_failures(world, model)
            assert _send(triton, model, 10, "full") == ["1"] * 10
            _wait(lambda: _log_failures(world, model) >= before + 10, 30, "the rows lost to a full disk")
    finally:
        if mounted:
            subprocess.run(["umount", str(log_root)], check=True)

    # Writable again: logging resumes by itself, and the lost rows stay counted.
    failed = _log_failures(world, model)
    assert _send(triton, model, 5, "writable") == ["1"] * 5

    def logged() -> int:
        return len(read_inference_log(str(log_root), started - timedelta(minutes=1),
                                      datetime.now(UTC) + timedelta(minutes=1), model=model))  # fmt: skip

    _wait(lambda: logged() >= 5, 30, "the rows sent once the folder was writable")
    assert logged() == 5, "rows were logged while the folder was unwritable or the disk full"
    assert _log_failures(world, model) == failed
    assert triton.ready_versions(model) == [1]
