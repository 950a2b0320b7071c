"""The small fixes the fault-injection tests (tests/integration/test_faults.py) called for, unit by unit.

- Triton killed mid-answer: the client sees ``HTTPConnectionClosed`` (an ``http.client.HTTPException``, no
  ``OSError``); it is a transient outage, and a load that broke that way, on a Triton that came back
  without it, fails at once as transient instead of waiting out the load timeout;
- MLflow stopped mid-register: a retry of the same Airflow run deletes the version the interrupted try
  created but never published, and closes its run;
- a resumed fine-tune says from which step it resumed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from geventhttpclient.response import HTTPConnectionClosed

from pitcrew import registry
from pitcrew.serving.client import RETRYABLE, TritonControl
from pitcrew.serving.errors import ModelLoadError, TritonUnavailableError
from tests.unit.mlflow_fixtures import sqlite_mlflow
from tests.unit.training_fixtures import demo_data, tiny_base  # noqa: F401


# ------------------------------------------------------------------------------------------------------
# Triton
# ------------------------------------------------------------------------------------------------------
class RestartingTriton:
    """tritonclient's HTTP client as ``load`` uses it: the load call's connection is closed mid-answer
    (Triton killed), the index is unreachable for ``down_polls`` polls, then answers ``states_after``."""

    def __init__(self, down_polls: int, states_after: dict[int, str]) -> None:
        self.down_polls, self.states_after = down_polls, states_after
        self.load_calls = 0

    def load_model(self, model, config=None):
        self.load_calls += 1
        raise HTTPConnectionClosed("connection closed.")

    def get_model_repository_index(self):
        if self.down_polls:
            self.down_polls -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        return [{"name": "m", "version": str(v), "state": s} for v, s in self.states_after.items()]


def _client(stub: RestartingTriton) -> TritonControl:
    client = TritonControl("127.0.0.1:1", retries=2, backoff_s=0.01, load_timeout_s=30.0)
    client.poll_s = 0.01
    client._client = stub
    return client


def test_a_closed_connection_is_an_outage_not_a_final_error() -> None:
    assert issubclass(HTTPConnectionClosed, RETRYABLE)

    class Closing:
        def get_model_repository_index(self):
            raise HTTPConnectionClosed("connection closed.")

    client = TritonControl("127.0.0.1:1", retries=2, backoff_s=0.01)
    client._client = Closing()
    with pytest.raises(TritonUnavailableError, match="unreachable for repository index after 2 attempts"):
        client.version_states("m")


def test_a_load_lost_with_a_restarted_triton_fails_at_once_as_transient() -> None:
    stub = RestartingTriton(down_polls=3, states_after={1: "READY"})
    started = time.monotonic()
    with pytest.raises(TritonUnavailableError, match=r"went away while loading versions \[2\].*not sent again"):
        _client(stub).load("m", "{}", versions=[2])
    assert stub.load_calls == 1 and time.monotonic() - started < 10  # not the 30 s load timeout


def test_a_load_the_restarted_triton_runs_itself_is_awaited() -> None:
    stub = RestartingTriton(down_polls=2, states_after={2: "READY"})
    _client(stub).load("m", "{}", versions=[2])
    assert stub.load_calls == 1


def test_without_an_outage_a_broken_load_still_waits_for_its_state() -> None:
    stub = RestartingTriton(down_polls=0, states_after={2: "UNAVAILABLE"})
    with pytest.raises(ModelLoadError, match="not sent again"):
        _client(stub).load("m", "{}", versions=[2])


# ------------------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------------------
def _artifact(tmp_path: Path) -> Path:
    serving = tmp_path / "serving"
    serving.mkdir()
    (serving / "model.onnx").write_bytes(b"onnx")
    return serving


def test_a_retry_deletes_the_version_its_interrupted_try_left_unpublished(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_template: Path
) -> None:
    from mlflow import MlflowClient

    client = sqlite_mlflow(monkeypatch, tmp_path, mlflow_template)
    serving = _artifact(tmp_path)
    registry.register_version(client, "m", serving_dir=serving, tags={"airflow_dag_run_id": "other"})
    registry.promote(client, "m", 1, approver="ann")

    originals = {name: getattr(MlflowClient, name) for name in ("set_registered_model_alias", "set_terminated")}

    def mlflow_gone(self, *args, **kwargs):  # every call fails, as with MLflow stopped after the version
        raise ConnectionError("MLflow stopped")

    for name in originals:
        monkeypatch.setattr(MlflowClient, name, mlflow_gone)
    with pytest.raises(ConnectionError):
        registry.register_version(client, "m", serving_dir=serving, tags={"airflow_dag_run_id": "run-1"})
    for name, method in originals.items():
        monkeypatch.setattr(MlflowClient, name, method)
    assert sorted(int(v.version) for v in client.search_model_versions("name='m'")) == [1, 2]
    assert client.get_run(client.get_model_version("m", "2").run_id).info.status == "RUNNING"

    retried = registry.register_version(client, "m", serving_dir=serving, tags={"airflow_dag_run_id": "run-1"})
    assert retried.version == 3
    assert sorted(int(v.version) for v in client.search_model_versions("name='m'")) == [1, 3]
    assert registry.alias_version(client, "m", registry.CHAMPION) == 1
    assert registry.alias_version(client, "m", registry.CHALLENGER) == 3
    runs = client.search_runs([registry.experiment_id(client, "m")])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED", "FINISHED"]


def test_published_versions_and_other_runs_are_never_touched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_template: Path
) -> None:
    client = sqlite_mlflow(monkeypatch, tmp_path, mlflow_template)
    serving = _artifact(tmp_path)
    first = registry.register_version(client, "m", serving_dir=serving, tags={"airflow_dag_run_id": "run-1"})
    # published, but closing its run failed: the retry keeps the version and closes the run as FINISHED
    client.update_run(first.run_id, status="RUNNING")
    other = client.create_run(registry.experiment_id(client, "m"), tags={"airflow_dag_run_id": "run-2"})
    assert registry.remove_half_published(client, "m", "run-1") == []
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"
    assert registry.remove_half_published(client, "m", "") == []
    assert registry.remove_half_published(client, "unknown", "run-1") == []


# ------------------------------------------------------------------------------------------------------
# fine-tune
# ------------------------------------------------------------------------------------------------------
def test_the_summary_says_from_which_step_a_fine_tune_resumed(
    tmp_path: Path, tiny_base: Path, demo_data: dict[str, Path], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import training.finetune as finetune_module
    from training.demo_data import LABELS
    from training.finetune import FinetuneConfig, finetune

    common = dict(train_data=demo_data["a_train"], eval_fraction=0.0, base_model=str(tiny_base),
                  labels=list(LABELS), max_steps=4, eval_every=2, batch_size=128, progress=False)  # fmt: skip
    straight = finetune(FinetuneConfig(output_dir=tmp_path / "straight", resume=True, **common))
    assert json.loads((straight / "training_summary.json").read_text())["resumed_from_step"] is None

    original_save = finetune_module.save_checkpoint

    def die_after_first_checkpoint(*args, **kwargs) -> None:
        original_save(*args, **kwargs)
        raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(finetune_module, "save_checkpoint", die_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        finetune(FinetuneConfig(output_dir=tmp_path / "resumed", **common))
    monkeypatch.setattr(finetune_module, "save_checkpoint", original_save)
    resumed = finetune(FinetuneConfig(output_dir=tmp_path / "resumed", resume=True, **common))
    summary = json.loads((resumed / "training_summary.json").read_text())
    assert (summary["resumed_from_step"], summary["steps"]) == (2, 4)


# ------------------------------------------------------------------------------------------------------
# the local stack's Triton
# ------------------------------------------------------------------------------------------------------
def test_a_restarted_triton_never_loads_a_staging_model(tmp_path: Path) -> None:
    from pitcrew.serving.model_config import staging_model_name
    from pitcrew.settings import Settings
    from pitcrew.stack.components import triton_component

    settings = Settings(home=tmp_path / "home")
    for name, version in (("textclf", 1), (staging_model_name("textclf"), 2)):
        (settings.repository_dir / name / str(version)).mkdir(parents=True)
        (settings.repository_dir / name / "config.pbtxt").write_text(f'name: "{name}"')
    (process,) = triton_component(settings).processes()
    assert [a for a in process.argv if a.startswith("--load-model")] == ["--load-model=textclf"]
