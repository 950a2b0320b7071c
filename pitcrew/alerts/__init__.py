"""Alert ingestion: payload models, webhook auth, routing and the shared dedup/cooldown/cap policy.

Pure Python (pydantic, sqlite3, yaml): the Airflow plugin and the ``pitcrew_watch`` DAG both call into it,
so the webhook and the poller apply one policy over one state file.
"""
