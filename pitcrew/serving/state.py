"""Which version of a model is serving and which served before: the memory that makes rollback possible.

Kept as a small JSON file per model under ``<repository>/.pitcrew/state`` (Triton ignores it), written
atomically and only while the model's swap lock is held.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pitcrew.serving.publish import write_atomic


@dataclass
class ModelState:
    serving: int | None = None
    previous: int | None = None
    history: list[dict] = field(default_factory=list)

    def committed(self, version: int, action: str) -> ModelState:
        previous = self.serving if self.serving != version else self.previous
        entry = {"version": version, "action": action, "from": self.serving, "at": time.time()}
        return ModelState(serving=version, previous=previous, history=[*self.history, entry][-50:])


def state_path(repository: Path, model: str) -> Path:
    return Path(repository) / ".pitcrew" / "state" / f"{model}.json"


def load_state(repository: Path, model: str) -> ModelState:
    path = state_path(repository, model)
    if not path.exists():
        return ModelState()
    raw = json.loads(path.read_text())
    return ModelState(raw.get("serving"), raw.get("previous"), list(raw.get("history", [])))


def save_state(repository: Path, model: str, state: ModelState) -> None:
    write_atomic(state_path(repository, model), json.dumps(asdict(state), indent=2))
