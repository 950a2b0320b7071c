"""The first champion of a model: train on its reference data, compile, register, serve, promote.

Every later version comes through the maintenance DAG and its approval; this is the operator's own
manual first step (``pitcrew bootstrap``), so there is something to compare the first challenger with.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

from pitcrew import registry
from pitcrew.models_file import ModelEntry
from pitcrew.pipeline.workspace import Workspace
from pitcrew.settings import Settings

log = logging.getLogger(__name__)


def bootstrap(
    entry: ModelEntry,
    settings: Settings,
    *,
    base_model: str | None = None,
    epochs: float | None = None,
    approver: str = "bootstrap",
) -> dict:
    """Train, compile, register and deploy version 1 (or the next free version) as the champion."""
    from mlflow import MlflowClient

    from pitcrew.pipeline.training_config import finetune_config
    from pitcrew.serving.factory import (
        check_artifact_labels,
        deploy_version,
        make_swapper,
        target_from_settings,
    )
    from training.compile import CompileConfig, compile_model
    from training.finetune import finetune

    started = time.monotonic()
    run_id = "bootstrap-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    ws = Workspace.for_run(settings.home_dir, entry.name, run_id)
    timings: dict[str, float] = {}

    mark = time.monotonic()
    checkpoint = finetune(
        finetune_config(
            entry, output_dir=ws.challenger, train_data=Path(entry.train_data), base_model=base_model, epochs=epochs,
            mlflow_tracking_uri=settings.mlflow_url,
        )
    )  # fmt: skip
    timings["fine_tune_s"] = time.monotonic() - mark

    mark = time.monotonic()
    golden = Path(entry.golden_data) if entry.golden_data else None
    artifact = compile_model(
        CompileConfig(
            model_dir=checkpoint,
            output_dir=ws.artifact,
            golden_data=golden,
            runtime=entry.runtime,
            tensorrt=entry.tensorrt_mode,
            overwrite=True,
        )  # fmt: skip
    )
    check_artifact_labels(entry, artifact)
    timings["compile_s"] = time.monotonic() - mark

    mark = time.monotonic()
    client = MlflowClient(tracking_uri=settings.mlflow_url, registry_uri=settings.mlflow_url)
    version = registry.register_version(
        client, entry.name, serving_dir=artifact, checkpoint_dir=checkpoint, training_data=Path(entry.train_data),
        tags={"trigger": "bootstrap", "train_data": entry.train_data, "parent_version": ""},
    )  # fmt: skip
    timings["register_s"] = time.monotonic() - mark

    mark = time.monotonic()
    swapper = make_swapper(entry, settings.triton_http_url, settings.repository_dir, lock_timeout_s=60)
    swap = deploy_version(entry, swapper, version.version, artifact, target_from_settings())
    timings["deploy_s"] = time.monotonic() - mark

    registry.promote(client, entry.name, version.version, approver=approver)
    timings["total_s"] = time.monotonic() - started
    log.info("%s version %d is the champion and serves in Triton", entry.name, version.version)
    return {
        "model": entry.name,
        "version": version.version,
        "serving_version": swap.version,
        "workspace": str(ws.root),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
