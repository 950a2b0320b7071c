"""The fine-tune loop's checkpoint: what a retried task resumes from, written atomically.

Both files are read back with ``torch.load(weights_only=True)``: unpickling may only rebuild tensors and
plain containers, so a checkpoint folder someone else could write to cannot run code in the worker. The
loop state is therefore kept to JSON types (numpy scalars from the metrics become floats).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def cpu_state(model: Any) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, scaler: Any, state: dict,
                     best_state: dict) -> None:
    """Model, optimizer, scheduler, scaler and loop state; written to a temp file and renamed (atomic)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "scaler": scaler.state_dict(), "state": json.loads(json.dumps(state, default=float)), "rng": torch.get_rng_state(),
               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    for name, obj in (("best.pt", best_state), ("checkpoint.pt", payload)):
        tmp = folder / f".{name}.tmp"
        torch.save(obj, tmp)
        os.replace(tmp, folder / name)


def load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, scaler: Any) -> dict:
    import torch

    payload = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["rng"])  # dropout continues exactly where the interrupted run was
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return payload["state"]
