"""The routing file: which alerts start which DAG, with which conf.

A route matches an alert by name and labels; the model comes from one label (``model`` by default) and
must be declared in the models file, so an alert about an unknown model never starts anything. Routes are
tried in order; the first match wins. Alerts that match nothing are recorded as ``unrouted``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pitcrew.alerts.errors import RoutesFileError
from pitcrew.alerts.payloads import WATCH_RECEIVER, Alert

_DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alertnames: list[str] = Field(
        default_factory=list, description="Alert names this route takes; empty = any."
    )
    match: dict[str, str] = Field(default_factory=dict, description="Labels that must equal these values.")
    match_re: dict[str, str] = Field(
        default_factory=dict, description="Labels that must fully match these regexes."
    )
    model_label: str = Field("model", description="The label that names the served model.")
    dag_id: str = Field("pitcrew_maintenance_{model}", description="DAG to trigger; '{model}' is filled in.")
    conf: dict[str, Any] = Field(default_factory=dict, description="Extra conf keys for the run.")

    @field_validator("match_re")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match_re.{label}: {exc}") from None
        return value

    @field_validator("dag_id")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            sample = value.format(model="m")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"dag_id may only use the placeholder {{model}}: {exc}") from None
        if not _DAG_ID.match(sample):
            raise ValueError(f"dag_id {value!r} does not give a valid DAG id")
        return value

    def matches(self, alert: Alert) -> bool:
        if self.alertnames and alert.name not in self.alertnames:
            return False
        if any(alert.labels.get(k) != v for k, v in self.match.items()):
            return False
        return all(re.fullmatch(p, alert.labels.get(k, "")) for k, p in self.match_re.items())


class PolledQuery(BaseModel):
    """A PromQL query the poller evaluates; every series it returns is a breach, named ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="Alert name given to each breach.")
    expr: str = Field(min_length=1, description="PromQL with the threshold inside; results are breaches.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to each breach.")


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routes: list[Route] = Field(min_length=1)
    queries: list[PolledQuery] = Field(default_factory=list)


@dataclass(frozen=True)
class RoutedAlert:
    alert: Alert
    model: str
    dag_id: str
    conf: dict[str, Any]


def load_routes(path: Path) -> RoutesFile:
    """Read and validate the routing file; errors name the file and the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RoutesFileError(f"routing file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise RoutesFileError(f"routing file {path} is not valid YAML: {exc}") from None
    try:
        return RoutesFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise RoutesFileError(f"routing file {path}: {where}: {err['msg']}") from None


def route_alert(routes: RoutesFile, alert: Alert, known_models: Collection[str]) -> RoutedAlert | None:
    """The first route that takes ``alert`` and names a known model, as DAG id and run conf; else None."""
    for route in routes.routes:
        if not route.matches(alert):
            continue
        model = alert.labels.get(route.model_label)
        if model is None or model not in known_models:
            continue
        # The maintenance DAG tells pushed alerts ("alert") from the poller's findings ("watch").
        trigger = "watch" if alert.source == WATCH_RECEIVER else "alert"
        conf = {**route.conf, "model": model, "trigger": trigger, "alert": alert.as_conf()}
        return RoutedAlert(alert=alert, model=model, dag_id=route.dag_id.format(model=model), conf=conf)
    return None
