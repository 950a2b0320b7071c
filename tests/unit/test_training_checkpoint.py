"""The fine-tune checkpoint loads tensors and plain data only: a pickle that would run code is refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint import load_checkpoint, save_checkpoint


def _parts():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return model, optimizer, scheduler, scaler


class _RunsCode:
    def __reduce__(self):
        return (Path("/tmp/pitcrew-checkpoint-pwned").touch, ())


def test_round_trip_with_numpy_metrics(tmp_path: Path) -> None:
    model, optimizer, scheduler, scaler = _parts()
    state = {"step": 7, "best_score": [np.float64(0.75), np.float32(0.5)], "history": [{"accuracy": np.float64(1.0)}]}
    save_checkpoint(tmp_path, model, optimizer, scheduler, scaler, state, best_state=model.state_dict())
    fresh = _parts()
    loaded = load_checkpoint(tmp_path, *fresh)
    assert loaded == {"step": 7, "best_score": [0.75, 0.5], "history": [{"accuracy": 1.0}]}
    assert torch.equal(fresh[0].weight, model.weight)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = Path("/tmp/pitcrew-checkpoint-pwned")
    marker.unlink(missing_ok=True)
    model, optimizer, scheduler, scaler = _parts()
    torch.save({"model": model.state_dict(), "state": _RunsCode()}, tmp_path / "checkpoint.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path, model, optimizer, scheduler, scaler)
    assert not marker.exists()
