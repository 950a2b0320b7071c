"""DAG-level wiring shared by every pitcrew DAG: the models, defaults, params and who may approve."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param

from pitcrew.models_file import ModelEntry, load_models_file
from pitcrew.settings import get_settings

#: Fixed and in the past: with ``catchup=False`` only the latest schedule interval ever runs.
START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
REQUEST_SECTION = "Set by the alert webhook and the poller"


def models() -> list[ModelEntry]:
    """The models file's entries (parsing it reads one local YAML file: no network, no heavy imports)."""
    return load_models_file(get_settings().models_file).models


def dag_args() -> dict[str, Any]:
    """Arguments every pitcrew DAG shares.

    One run per model at a time. Task retries are for transient errors only (operators fail everything
    else at once), a known number: ``retries`` tries after the first, with exponential backoff.
    Templates render as native objects, so an XCom pulled into an argument keeps its type.
    """
    return {
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "render_template_as_native_obj": True,
        "default_args": {
            "owner": "pitcrew",
            "retries": 2,
            "retry_delay": dt.timedelta(seconds=30),
            "retry_exponential_backoff": True,
            "max_retry_delay": dt.timedelta(minutes=5),
        },
    }


def xcom(task_id: str, key: str = "return_value") -> str:
    """A template that pulls a step's result. Used instead of ``task.output`` so that data passing adds no
    edge to the graph: every consumer already runs after its producer in the chain."""
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}', key='{key}') }}}}"


def approvers(entry: ModelEntry) -> list[dict[str, str]] | None:
    """The users who may answer this model's approvals (``approvers`` in the models file); None: any user
    whose Airflow role may answer human-in-the-loop requests."""
    return [{"id": user, "name": user} for user in entry.approvers] or None


def approval_timeout(entry: ModelEntry) -> dt.timedelta:
    return dt.timedelta(hours=entry.thresholds.approval_timeout_h)


def run_params(entry: ModelEntry, *, trigger: str, with_drift: bool) -> dict[str, Param]:
    """The trigger form, also the schema every run's conf is validated against when the run is created."""
    params = {
        "model": Param(entry.name, type="string", enum=[entry.name], title="Model",
                       description="The model this DAG maintains."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Everything up to and including the replay, but no approval and no swap."),
        "window_hours": Param(entry.thresholds.window_hours, type="number", minimum=0.01, title="Window (hours)",
                              description="How much recent logged traffic to check and learn from."),
        "trigger": Param(trigger, type="string", enum=["alert", "watch", "schedule", "manual"], title="Trigger",
                         description="What started the run (recorded in the new version's lineage).",
                         section=REQUEST_SECTION),
        "alert": Param(None, type=["null", "object"], required=["name", "fingerprint", "starts_at"],
                       properties={key: {"type": "string", "minLength": 1}
                                   for key in ("name", "fingerprint", "starts_at")},
                       title="Alert", description="The alert that started the run, if any.",
                       section=REQUEST_SECTION),
    }  # fmt: skip
    if with_drift:
        params["force_retrain"] = Param(False, type="boolean", title="Force retrain",
                                        description="Fine-tune even if no drift is confirmed.")  # fmt: skip
        params["skip_drift"] = Param(False, type="boolean", title="Skip drift check",
                                     description="Do not test for drift (implies retraining).")  # fmt: skip
    return params
