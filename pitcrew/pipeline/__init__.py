"""The maintenance pipeline's steps as plain functions (no Airflow import).

Airflow tasks in ``dags/`` are thin: they build clients through the Hooks in ``operators/`` and call
these functions, which take plain values and return small JSON-safe dicts for XCom. Files live in one
workspace folder per run (:mod:`pitcrew.pipeline.workspace`).
"""
