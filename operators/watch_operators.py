"""The poller's steps: read what is wrong from Prometheus, post it to pitcrew's alert webhook; and remind
approvers of approvals still waiting.

Polled findings take the same path as Alertmanager's pushes (one policy decides: dedup, cooldown, daily
cap), so the logic lives in :mod:`pitcrew.alerts.watch` and the webhook; these classes only talk to the
servers, through Airflow connections. Reminders are built by :mod:`pitcrew.notify` and sent through the
approval notifiers' channels (:mod:`operators.notifiers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import requests
import tenacity
from airflow.sdk import BaseOperator

from operators.base import as_bool
from operators.errors import retry_only_transient
from operators.prometheus_hook import PrometheusHook

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The webhook connection: conn type ``http``, host and port of the Airflow API server that mounts the
#: plugin, and the webhook's bearer token as the password (never a header in ``extra``: HttpHook sends
#: every unknown extra key as a header).
WEBHOOK_CONN_ID = "pitcrew_webhook"
#: Keys of that connection's ``extra`` only the webhook plugin reads (`pitcrew airflow-init` writes them):
#: secrets, not headers. HttpHook would send them as headers with every post (Grafana's token and the
#: HMAC secret riding along with Alertmanager-format bodies), so each post unsets them: requests drops
#: a header whose value is None.
PLUGIN_ONLY_EXTRA = ("hmac_secret", "grafana_token")
#: HttpHook's retry policy for the post (tenacity): quick attempts through a refused connection only.
POST_RETRY = {
    "stop": tenacity.stop_after_attempt(3),
    "wait": tenacity.wait_exponential(multiplier=0.5, max=4),
    "retry": tenacity.retry_if_exception_type((requests.ConnectionError, requests.Timeout)),
    "reraise": True,
}


class PrometheusFindingsOperator(BaseOperator):
    """Firing alerts (``ALERTS``) and breached routing-file queries, as webhook alert entries.

    Alerts keep Alertmanager's fingerprint (same labels, same hash), so an alert seen both pushed and
    polled starts one run. A query breach is kept only for a model no firing alert already names.

    :param prometheus_conn_id: connection of :class:`~operators.prometheus_hook.PrometheusHook` (templated).
    :param routes_file: the routing file with the polled queries; default ``<deploy_dir>/alert_routes.yaml``.
    """

    template_fields: Sequence[str] = ("prometheus_conn_id",)

    def __init__(
        self,
        *,
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
        routes_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prometheus_conn_id, self.routes_file = prometheus_conn_id, routes_file

    @retry_only_transient
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from pathlib import Path

        from pitcrew.alerts.routing import load_routes
        from pitcrew.alerts.service import routes_path
        from pitcrew.alerts.watch import entries_from_alerts, entries_from_query, merge_findings
        from pitcrew.settings import get_settings

        hook = PrometheusHook(self.prometheus_conn_id)
        routes = load_routes(Path(self.routes_file) if self.routes_file else routes_path(get_settings()))
        breaches: list[dict[str, Any]] = []
        for query in routes.queries:
            breaches += entries_from_query(query, hook.query(query.expr))
        findings = merge_findings(entries_from_alerts(hook.firing_alerts()), breaches)
        self.log.info("%d finding(s): %s", len(findings), [f["labels"].get("alertname") for f in findings])
        return findings


class AlertWebhookOperator(BaseOperator):
    """Post alert entries to pitcrew's alert webhook with ``HttpHook``, in Alertmanager's format.

    Returns the webhook's per-alert decisions (triggered, cooldown, capped, unrouted ...). A 5xx is
    retried by Airflow (the webhook asks to retry when Airflow's database is busy); a 4xx fails at once.

    :param entries: the alert entries (templated; usually :class:`PrometheusFindingsOperator`'s output).
    :param http_conn_id: the webhook connection (conn type ``http``; the token is its password).
    :param endpoint: the webhook's path on the API server.
    :param forward: post at all (templated); off reports what would be posted.
    """

    template_fields: Sequence[str] = ("entries", "forward")

    def __init__(
        self,
        *,
        entries: Any,
        http_conn_id: str = WEBHOOK_CONN_ID,
        endpoint: str = "/pitcrew/alerts",
        forward: bool | str = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.entries, self.http_conn_id, self.endpoint, self.forward = (
            entries,
            http_conn_id,
            endpoint,
            forward,
        )

    @retry_only_transient
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.providers.http.hooks.http import HttpHook

        from pitcrew.alerts.client import auth_headers
        from pitcrew.alerts.watch import forward

        entries = list(self.entries or [])
        if not entries or not as_bool(self.forward, "forward"):
            self.log.info("not posting %d finding(s)", len(entries))
            return []
        hook = HttpHook(method="POST", http_conn_id=self.http_conn_id)
        token = hook.get_connection(self.http_conn_id).password
        if not token:
            raise ValueError(
                f"connection {self.http_conn_id!r} has no password: set the webhook's bearer token"
            )

        def post(body: bytes) -> requests.Response:
            return hook.run_with_advanced_retry(
                POST_RETRY, endpoint=self.endpoint, data=body,
                headers={**auth_headers(body, token), **dict.fromkeys(PLUGIN_ONLY_EXTRA)},
                extra_options={"check_response": False, "timeout": 30},
            )  # fmt: skip

        outcomes = forward(entries, post)
        self.log.info("webhook decisions: %s", [o.get("decision") for o in outcomes])
        return outcomes


class ApprovalReminderOperator(BaseOperator):
    """Remind the notify channels of every pitcrew approval still unanswered after ``reminder_after``.

    Lists the waiting human-in-the-loop requests of the pitcrew DAGs through Airflow's REST API (as the
    read-only user of ``airflow_api_conn_id``), and for each that has waited the model's
    ``thresholds.reminder_after_h`` (default: half of ``approval_timeout_h``) and is still before its
    deadline, sends one reminder per channel of the model's ``notify`` list. What was sent is kept in
    ``<home>/notify/reminders.json`` (:mod:`pitcrew.notify.reminders`), so each request is reminded once;
    a channel that failed is tried again at the next poll, three times at most. A failing channel never
    fails the task. Returns one record per reminder tried.

    :param airflow_api_conn_id: connection of :class:`~operators.airflow_api_hook.AirflowApiHook`.
    :param state_file: the reminder log; default ``<home>/notify/reminders.json``.
    """

    def __init__(
        self, *, airflow_api_conn_id: str = "pitcrew_airflow_api", state_file: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.airflow_api_conn_id, self.state_file = airflow_api_conn_id, state_file

    @retry_only_transient
    def execute(self, context: Context) -> list[dict[str, Any]]:
        import datetime as dt
        from pathlib import Path

        from airflow.configuration import conf

        from operators.airflow_api_hook import AirflowApiHook
        from operators.notifiers import channel_id, send_notice
        from pitcrew.models_file import load_models_file
        from pitcrew.notify.messages import model_of, notice_from_detail
        from pitcrew.notify.reminders import ReminderLog, reminder_due, reminders_file, request_key
        from pitcrew.settings import get_settings

        settings = get_settings()
        told = {m.name: m for m in load_models_file(settings.models_file).models if m.notify}
        if not told:
            self.log.info("no model has notify channels: nobody to remind")
            return []
        waiting = AirflowApiHook(self.airflow_api_conn_id).api.waiting_approvals("pitcrew_")
        base = conf.get("api", "base_url", fallback="")
        now = dt.datetime.now(dt.UTC)
        tried: list[dict[str, Any]] = []
        path = Path(self.state_file) if self.state_file else reminders_file(settings.home_dir)
        with ReminderLog(path) as reminded:
            keys: set[str] = set()
            for detail in waiting:
                ti = detail["task_instance"]
                model = model_of(ti["dag_id"], set(told))
                if model is None:
                    continue
                entry, created = told[model], dt.datetime.fromisoformat(detail["created_at"])
                key = request_key(ti["dag_id"], ti["dag_run_id"], ti["task_id"], ti.get("map_index", -1),
                                  detail["created_at"])  # fmt: skip
                keys.add(key)
                timeout = dt.timedelta(hours=entry.thresholds.approval_timeout_h)
                if not reminder_due(created, now, entry.thresholds.reminder_after_h) or now >= created + timeout:
                    continue
                notice = notice_from_detail(detail, model=model, base_url=base, timeout=timeout, stage="reminder")
                channels = {channel_id(c): c for c in entry.notify}
                for name in reminded.pending(key, list(channels)):
                    ok = send_notice(channels[name], notice, context, self.log)
                    reminded.record(key, name, delivered=ok, now=now)
                    tried.append({"dag_id": ti["dag_id"], "run_id": ti["dag_run_id"], "task_id": ti["task_id"],
                                  "channel": name, "delivered": ok})  # fmt: skip
            reminded.keep_only(keys)
        self.log.info("%d waiting request(s); reminders: %s", len(waiting), tried)
        return tried
