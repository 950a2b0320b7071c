"""One folder per pipeline run: every file a step writes, so a rerun finds what the last attempt left."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def for_run(cls, home: Path, model: str, run_id: str) -> Workspace:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)[:120]
        root = Path(home) / "runs" / model / safe
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def window(self) -> Path:
        return self.root / "window.parquet"

    @property
    def labelled(self) -> Path:
        return self.root / "labelled.parquet"

    @property
    def train(self) -> Path:
        return self.root / "train.parquet"

    @property
    def eval(self) -> Path:
        return self.root / "eval.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine.parquet"

    @property
    def reports(self) -> Path:
        folder = self.root / "reports"
        folder.mkdir(exist_ok=True)
        return folder

    @property
    def champion_checkpoint(self) -> Path:
        return self.root / "champion" / "checkpoint"

    @property
    def champion_serving(self) -> Path:
        return self.root / "champion" / "serving"

    @property
    def challenger(self) -> Path:
        return self.root / "challenger"

    @property
    def artifact(self) -> Path:
        return self.root / "artifact"
