"""A window with no logged request at all (a short ``window_hours``, a quiet model) reads as insufficient
data for the drift check, as a short one does: the run ends at ``drift`` instead of failing there.

Found by tests/integration/test_dag_paths.py (the ``window_hours`` path): an empty window became a frame
of float64 columns, which the drift test refused as an incompatible dtype.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from monitoring.inference_log import InferenceLogWriter, InferenceRecord
from pitcrew.models_file import ModelEntry, Thresholds
from pitcrew.pipeline import data_steps
from pitcrew.pipeline.workspace import Workspace
from training.demo_data import LABELS, generate


def test_an_empty_window_is_insufficient_data_not_an_error(tmp_path: Path) -> None:
    train = tmp_path / "train.parquet"
    generate(200, domain="A", seed=1).to_parquet(train, index=False)
    entry = ModelEntry(
        name="textclf", train_data=str(train), inference_log=str(tmp_path / "log"), feedback=str(tmp_path / "fb"),
        labels=list(LABELS), thresholds=Thresholds(min_window_rows=50),
    )  # fmt: skip
    # Traffic was logged, an hour before the window.
    logged_at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    writer = InferenceLogWriter(entry.inference_log, flush_interval_s=60)
    writer.append([
        InferenceRecord(uuid.uuid4().hex, logged_at.timestamp() + i, entry.name, "1", text, "billing", 0.4)
        for i, text in enumerate(generate(60, domain="B", seed=3)["text"])
    ])  # fmt: skip
    writer.close()
    ws = Workspace.for_run(tmp_path / "home", entry.name, "manual__2026-12-06T00:00:00+00:00")

    assert data_steps.load_window(entry, ws, hours=0.01)["rows"] == 0
    data_steps.data_quality(entry, ws)
    result = data_steps.drift(entry, ws)

    assert (result["decision"], result["drift"]) == ("insufficient_data", False), result
    assert "0 row(s)" in result["reason"], result
