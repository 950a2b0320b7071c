"""Alert ingestion: payload models, webhook auth, routing and the shared dedup/cooldown/cap policy.

No Airflow import at module level (pydantic, sqlite3, yaml, FastAPI for the app): the Airflow plugin
mounts :mod:`pitcrew.alerts.webhook`, which creates runs through :mod:`pitcrew.alerts.airflow_trigger`
inside the API server; the ``pitcrew_watch`` DAG posts its findings to that webhook, so both paths apply
one policy over one state file (``<home>/alerts/state.db``).
"""
