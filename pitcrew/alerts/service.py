"""Route → policy → trigger for a batch of alerts; the one entry point the webhook calls."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pitcrew.alerts.errors import TriggerRejected, TriggerUnavailable
from pitcrew.alerts.payloads import Alert
from pitcrew.alerts.policy import AlertPolicy, Decision, Limits, Reservation
from pitcrew.alerts.routing import RoutesFile, load_routes, route_alert
from pitcrew.models_file import load_models_file
from pitcrew.settings import Settings

log = logging.getLogger(__name__)

#: ``(dag_id, run_id, conf) -> run_id``: creates the run or raises TriggerRejected/TriggerUnavailable.
TriggerFn = Callable[[str, str, dict[str, Any]], str]
#: ``dag_id -> run_id | None``: a run of the DAG still queued or running (the incident in flight).
OpenRunFn = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one alert; the webhook returns these."""

    alertname: str
    fingerprint: str
    status: str
    decision: str
    model: str | None = None
    dag_id: str | None = None
    run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertService:
    def __init__(
        self,
        policy: AlertPolicy,
        routes: RoutesFile,
        limits: Mapping[str, Limits],
        trigger: TriggerFn,
        open_run: OpenRunFn | None = None,
    ) -> None:
        self.policy = policy
        self.routes = routes
        self.limits = dict(limits)
        self.trigger = trigger
        self.open_run = open_run

    def handle(self, alerts: Iterable[Alert]) -> list[Outcome]:
        """Apply the policy to each alert in order.

        :raises TriggerUnavailable: Airflow could not take a run now; earlier alerts of the batch keep
            their runs (and their cooldown), so the sender's retry does not duplicate them.
        """
        return [self._one(alert) for alert in alerts]

    def _one(self, alert: Alert) -> Outcome:
        def outcome(decision: Decision, **kw: Any) -> Outcome:
            return Outcome(alert.name, alert.fingerprint, alert.status, decision.value, **kw)

        if alert.status == "resolved":
            self.policy.record(alert, Decision.RESOLVED)
            return outcome(Decision.RESOLVED)
        routed = route_alert(self.routes, alert, self.limits.keys())
        if routed is None:
            self.policy.record(alert, Decision.UNROUTED)
            return outcome(Decision.UNROUTED)
        limits = self.limits[routed.model]
        in_flight = self.open_run(routed.dag_id) if self.open_run and limits.one_run_per_incident else None
        reserved = self.policy.reserve(routed, limits, open_run=in_flight)
        if not isinstance(reserved, Reservation):
            return outcome(reserved, model=routed.model, dag_id=routed.dag_id)
        try:
            run_id = self.trigger(routed.dag_id, reserved.run_id, routed.conf)
        except TriggerRejected as exc:
            log.error("alert %s not triggered: %s", alert.name, exc)
            self.policy.release(reserved, Decision.REJECTED)
            return outcome(Decision.REJECTED, model=routed.model, dag_id=routed.dag_id)
        except BaseException:
            self.policy.release(reserved)
            raise
        self.policy.confirm(reserved)
        log.info("alert %s (%s) started %s run %s", alert.name, alert.fingerprint, routed.dag_id, run_id)
        return outcome(Decision.TRIGGERED, model=routed.model, dag_id=routed.dag_id, run_id=run_id)


def state_path(settings: Settings) -> Path:
    return settings.home_dir / "alerts" / "state.db"


def routes_path(settings: Settings) -> Path:
    return settings.deploy_dir / "alert_routes.yaml"


def service_from_settings(
    settings: Settings, trigger: TriggerFn, open_run: OpenRunFn | None = None
) -> AlertService:
    """The service as configured: state under ``<home>``, routes in ``<deploy_dir>``, limits per model."""
    models = load_models_file(settings.models_file)
    limits = {
        m.name: Limits(m.alert_cooldown_s, m.max_auto_runs_per_day, m.one_run_per_incident) for m in models.models
    }
    return AlertService(
        AlertPolicy(state_path(settings)), load_routes(routes_path(settings)), limits, trigger, open_run
    )


__all__ = ["AlertService", "Outcome", "TriggerFn", "TriggerUnavailable", "service_from_settings"]
