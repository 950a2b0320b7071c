"""A per-model swap lock across processes (CLI, Airflow workers, benchmarks) on one repository.

Two concurrent load calls for one model make Triton load it twice (server issue 7018), so every swap of a
model holds this lock. It is an ``flock`` on a file beside the repository: released by the kernel if the
holder dies, so a crashed swap never wedges the model.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pitcrew.serving.errors import SwapInProgressError


def lock_path(repository: Path, model: str) -> Path:
    return Path(repository) / ".pitcrew" / "locks" / f"{model}.lock"


@contextmanager
def model_lock(repository: Path, model: str, timeout_s: float = 0.0, poll_s: float = 0.05) -> Iterator[None]:
    """Hold the swap lock of ``model``; wait up to ``timeout_s`` (0: fail at once) then raise."""
    path = lock_path(repository, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise SwapInProgressError(
                        f"{model}: another swap is in progress (lock {path}, holder pid {holder}); "
                        "swaps of one model never interleave, retry when it finishes"
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
