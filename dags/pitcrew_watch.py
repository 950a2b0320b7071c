"""
### pitcrew_watch

Polls Prometheus every few minutes, besides Alertmanager's push: firing `ALERTS`, and the queries of the
routing file (error ratio, p99 latency, mean confidence, drift score). Every finding is posted to the pitcrew
webhook, which applies the same dedup, cooldown and daily cap as for Alertmanager's alerts and starts
`pitcrew_maintenance_<model>`. Prometheus comes from the `prometheus` connection (or settings); the
webhook URL, secrets and routing file from pitcrew settings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task


@dag(
    dag_id="pitcrew_watch",
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=4),
    tags=["pitcrew", "alerts"],
    doc_md=__doc__,
    params={
        "prometheus_conn_id": Param(
            "prometheus_default", type="string", title="Prometheus connection",
            description="Airflow connection of type prometheus; settings.prometheus_url when it does not exist.",
        ),
        "forward": Param(
            True, type="boolean", title="Forward findings",
            description="Post findings to the webhook (off: only report what would be posted).",
        ),
    },  # fmt: skip
)
def pitcrew_watch():
    @task(retries=1, retry_delay=timedelta(seconds=30))
    def poll(params: dict | None = None) -> list[dict]:
        """Firing alerts and breached queries, as webhook alert entries."""
        from operators.prometheus_hook import PrometheusHook
        from pitcrew.alerts.routing import load_routes
        from pitcrew.alerts.service import routes_path
        from pitcrew.alerts.watch import entries_from_alerts, entries_from_query, merge_findings
        from pitcrew.settings import get_settings

        hook = PrometheusHook((params or {}).get("prometheus_conn_id", PrometheusHook.default_conn_name))
        breaches = []
        for query in load_routes(routes_path(get_settings())).queries:
            breaches += entries_from_query(query, hook.query(query.expr))
        return merge_findings(entries_from_alerts(hook.firing_alerts()), breaches)

    @task(retries=1, retry_delay=timedelta(seconds=30))
    def forward(entries: list[dict], params: dict | None = None) -> list[dict]:
        """Post to the webhook; its answer says which findings started a run."""
        from pitcrew.alerts.watch import forward as post
        from pitcrew.settings import get_settings
        from pitcrew.stack.components import webhook_hmac_secret, webhook_token

        if not entries or not (params or {}).get("forward", True):
            return []
        settings = get_settings()
        url = f"{settings.airflow_url}/pitcrew/alerts"
        return post(entries, url, webhook_token(settings), webhook_hmac_secret(settings))

    forward(poll())


pitcrew_watch()
