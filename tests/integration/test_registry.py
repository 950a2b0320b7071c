"""The registry contract against a real MLflow tracking server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pitcrew import registry
from tests.stack_fixtures import make_settings, running_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowClient]:
    settings = make_settings(tmp_path_factory.mktemp("mlflow-stack"))
    with running_stack(settings, only=("mlflow",)):
        yield MlflowClient(tracking_uri=settings.mlflow_url, registry_uri=settings.mlflow_url)


def _artifact(tmp_path: Path, marker: str) -> Path:
    serving = tmp_path / f"serving-{marker}"
    serving.mkdir()
    (serving / "model.onnx").write_bytes(b"onnx-" + marker.encode())
    (serving / "labels.json").write_text(json.dumps(["a", "b"]))
    return serving


class TestRegistry:
    def test_register_promote_rollback(self, client: MlflowClient, tmp_path: Path) -> None:
        model = "regtest"
        assert registry.alias_version(client, model, registry.CHAMPION) is None

        checkpoint = tmp_path / "ckpt"
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text("{}")
        v1 = registry.register_version(
            client, model, serving_dir=_artifact(tmp_path, "v1"), checkpoint_dir=checkpoint,
            tags={"trigger": "bootstrap", "drift_report": {"drift": False}}, metrics={"accuracy": 0.9},
        )  # fmt: skip
        assert v1.version == 1
        assert registry.alias_version(client, model, registry.CHALLENGER) == 1
        stored = registry.get_version(client, model, 1)
        assert stored.tags["trigger"] == "bootstrap"
        assert json.loads(stored.tags["drift_report"]) == {"drift": False}
        assert client.get_run(v1.run_id).data.metrics["accuracy"] == 0.9

        assert registry.promote(client, model, 1, approver="alice") == {"champion": 1, "previous": None}
        assert registry.alias_version(client, model, registry.CHALLENGER) is None
        assert registry.get_version(client, model, 1).tags["approver"] == "alice"

        v2 = registry.register_version(
            client, model, serving_dir=_artifact(tmp_path, "v2"), tags={"parent_version": 1}
        )
        assert v2.version == 2
        assert (
            registry.alias_version(client, model, registry.CHAMPION) == 1
        )  # registering never moves champion
        registry.promote(client, model, 2, approver="bob")
        assert registry.alias_version(client, model, registry.CHAMPION) == 2
        assert registry.alias_version(client, model, registry.PREVIOUS) == 1

        # The serving artifact of a version round-trips byte for byte.
        downloaded = registry.download(client, model, 2, registry.SERVING_PATH, tmp_path / "dl")
        assert (downloaded / "model.onnx").read_bytes() == b"onnx-v2"
        ckpt = registry.download(client, model, 1, registry.CHECKPOINT_PATH, tmp_path / "dl1")
        assert (ckpt / "config.json").exists()

        assert registry.restore_previous(client, model, approver="carol") == {"champion": 1, "previous": 2}
        assert registry.alias_version(client, model, registry.CHAMPION) == 1
        assert registry.get_version(client, model, 2).tags["rolled_back_by"] == "carol"

    def test_training_snapshot_round_trips(self, client: MlflowClient, tmp_path: Path) -> None:
        import pandas as pd

        data = tmp_path / "train.csv"
        pd.DataFrame({"text": ["a b", "c d"], "label": ["x", "y"], "extra": [1, 2]}).to_csv(data, index=False)
        version = registry.register_version(client, "regsnap", serving_dir=_artifact(tmp_path, "s"), training_data=data)
        snapshot = registry.training_snapshot(client, "regsnap", version.version, tmp_path / "snap")
        assert pd.read_parquet(snapshot).to_dict("list") == {"text": ["a b", "c d"], "label": ["x", "y"]}
        bare = registry.register_version(client, "regsnap", serving_dir=_artifact(tmp_path, "t"))
        assert registry.training_snapshot(client, "regsnap", bare.version, tmp_path / "snap2") is None

    def test_nothing_deployable_is_refused(self, client: MlflowClient, tmp_path: Path) -> None:
        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(registry.RegistryError, match="nothing deployable"):
            registry.register_version(client, "regtest2", serving_dir=empty)

    def test_rollback_without_previous(self, client: MlflowClient, tmp_path: Path) -> None:
        registry.register_version(client, "regtest3", serving_dir=_artifact(tmp_path, "x"))
        registry.promote(client, "regtest3", 1, approver=None)
        with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
            registry.restore_previous(client, "regtest3", approver=None)
