"""A private local stack for the alert path: a DAGs folder with stand-in maintenance DAGs, and a models file.

Used by the alert integration tests and ``benchmarks/alert_latency.py``, together with
:func:`pitcrew.demo.write_fast_deploy` (the compressed-time copy of ``deploy/`` the demo also runs on).
Also the senders' example payloads, which unit and integration tests post.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pitcrew.settings import REPO_ROOT

STANDIN_DAG = Path(__file__).parent / "standin_dags" / "standin_maintenance.py"


def write_dags_folder(folder: Path, extra: tuple[Path, ...] = ()) -> Path:
    """A DAGs folder with the stand-in maintenance DAGs (one per model), plus copies of ``extra`` DAG files.

    The repository's ``dags/pitcrew_dags`` package is copied too: the stand-in and the real DAG files
    import it from the DAGs folder, as Airflow runs them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(STANDIN_DAG, folder / STANDIN_DAG.name)
    shutil.copytree(REPO_ROOT / "dags" / "pitcrew_dags", folder / "pitcrew_dags", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy2(REPO_ROOT / "dags" / ".airflowignore", folder / ".airflowignore")
    for path in extra:
        shutil.copy2(path, folder / path.name)
    return folder


def write_models_file(target: Path, *, max_auto_runs_per_day: int, alert_cooldown_s: int = 3600) -> Path:
    """The repo's models file with the automatic-run cap and cooldown replaced."""
    data = yaml.safe_load((REPO_ROOT / "models.yaml").read_text())
    for entry in data["models"]:
        entry["max_auto_runs_per_day"] = max_auto_runs_per_day
        entry["alert_cooldown_s"] = alert_cooldown_s
        # These stacks measure and count one run per alert: no attaching alerts to an incident's run.
        entry["one_run_per_incident"] = False
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


# Grafana's documented webhook example (docs/sources/alerting/.../integrations/webhook-notifier.md).
GRAFANA_EXAMPLE = {
    "receiver": "My Super Webhook",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
            "annotations": {
                "description": "The system has high memory usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone us-1",
            },
            "startsAt": "2021-10-12T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"B": 44.23943737541908, "C": 1},
        },
        {
            "status": "firing",
            "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
            "annotations": {"description": "The system has high CPU usage"},
            "startsAt": "2021-10-12T09:56:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
            "fingerprint": "bc97ff14869b13e3",
            "silenceURL": "",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"B": 44.23943737541908, "C": 1},
        },
    ],
    "groupLabels": {},
    "commonLabels": {"team": "blue"},
    "commonAnnotations": {},
    "externalURL": "https://play.grafana.org/",
    "version": "1",
    "groupKey": "{}:{}",
    "truncatedAlerts": 0,
    "title": "[FIRING:2]  (blue)",
    "state": "alerting",
    "message": "**Firing**",
}

# Alertmanager's webhook as it really sends it (nanosecond timestamps).
ALERTMANAGER_EXAMPLE = {
    "receiver": "pitcrew",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "TritonInferenceFailures", "model": "textclf", "severity": "warning"},
            "annotations": {"summary": "Triton model textclf failed inference requests"},
            "startsAt": "2026-11-22T00:10:03.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:29090/graph?g0.expr=x",
            "fingerprint": "6b3ad8b2c1d4e5f6",
        }
    ],
    "groupLabels": {"alertname": "TritonInferenceFailures", "model": "textclf"},
    "commonLabels": {"alertname": "TritonInferenceFailures", "model": "textclf", "severity": "warning"},
    "commonAnnotations": {},
    "externalURL": "http://127.0.0.1:29093",
    "version": "4",
    "groupKey": '{}:{alertname="TritonInferenceFailures", model="textclf"}',
    "truncatedAlerts": 0,
}
