"""The routing table of a weighted rollout: which share of a model's requests the challenger answers.

One small JSON file per model, ``<repository>/.pitcrew/routing/<model>.json`` (Triton ignores the
folder), replaced atomically, read by the champion's front model on its hot path (it re-reads the file
when its modification time changes, so a new weight applies within a fraction of a second and no model
is reloaded; ``model_repository/textclf/model.py``, "routing"). No file, or weight 0: the champion
answers everything.

The champion stays the model clients call; the challenger is loaded beside it as the Triton model
``<model>__canary`` and reached by BLS for its share (docs/design.md, "Progressive delivery").
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pitcrew.serving.model_config import canary_model_name
from pitcrew.serving.publish import write_atomic

Mode = Literal["split", "shadow"]


class RoutingError(ValueError):
    """A routing table that is not valid; the message names the field."""


@dataclass(frozen=True)
class RoutingTable:
    """``weight`` percent of requests go to ``challenger`` (split), or every request is also sent to it and
    only the champion's answer returned (shadow, weight 0)."""

    model: str
    champion: int
    challenger: int
    weight: float
    mode: Mode = "split"
    step: int = 0
    updated_at: str = ""

    def __post_init__(self) -> None:
        for name in ("champion", "challenger", "step"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise RoutingError(f"routing of {self.model}: {name} must be a whole number >= 0, not {value!r}")
        if self.champion == self.challenger:
            raise RoutingError(f"routing of {self.model}: champion and challenger are both version {self.champion}")
        if not isinstance(self.weight, int | float) or isinstance(self.weight, bool) or not 0 <= self.weight <= 100:
            raise RoutingError(f"routing of {self.model}: weight must be a percentage 0-100, not {self.weight!r}")
        if math.isnan(self.weight):
            raise RoutingError(f"routing of {self.model}: weight must be a percentage 0-100, not NaN")
        if self.mode not in ("split", "shadow"):
            raise RoutingError(f"routing of {self.model}: mode must be split or shadow, not {self.mode!r}")
        if self.mode == "shadow" and self.weight != 0:
            raise RoutingError(f"routing of {self.model}: in shadow mode the champion answers all (weight 0)")

    @property
    def canary_model(self) -> str:
        return canary_model_name(self.model)

    def weights(self) -> dict[int, float]:
        """Share of answered requests per version, in percent."""
        return {self.champion: 100.0 - self.weight, self.challenger: float(self.weight)}


def routing_path(repository: Path, model: str) -> Path:
    return Path(repository) / ".pitcrew" / "routing" / f"{model}.json"


def write_routing(repository: Path, table: RoutingTable) -> RoutingTable:
    """Replace the model's routing table (readers see the old or the new one, never half); return it as
    written, with its time."""
    stamped = RoutingTable(**{**asdict(table), "updated_at": datetime.now(UTC).isoformat()})
    write_atomic(routing_path(repository, table.model), json.dumps(asdict(stamped), indent=2))
    return stamped


def read_routing(repository: Path, model: str) -> RoutingTable | None:
    """The model's routing table; None when it has none (the champion answers everything)."""
    path = routing_path(repository, model)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RoutingError(f"routing table {path} is unreadable: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("model") != model:
        raise RoutingError(f"routing table {path} is not the table of {model}")
    known = {"model", "champion", "challenger", "weight", "mode", "step", "updated_at"}
    try:
        return RoutingTable(**{k: v for k, v in raw.items() if k in known})
    except TypeError as exc:  # a field missing
        raise RoutingError(f"routing table {path}: {exc}") from exc
    except RoutingError as exc:
        raise RoutingError(f"routing table {path}: {exc}") from exc


def clear_routing(repository: Path, model: str) -> bool:
    """Remove the routing table: the champion answers everything again. True if there was one."""
    path = routing_path(repository, model)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
