"""A private local stack for the alert path (Airflow + Alertmanager + Prometheus) with fast timings.

Integration tests and ``benchmarks/alert_latency.py`` use it: a temp copy of ``deploy/`` whose rule
``for:``/intervals and Alertmanager waits are seconds instead of minutes, a DAGs folder holding a
clearly labelled stand-in for ``pitcrew_maintenance_<model>`` (until the real one exists), and the repo's
``plugins/``. Nothing here is used in production.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pitcrew.settings import REPO_ROOT

#: Test-only stand-in for the maintenance DAG; the real one accepts the same conf keys.
STANDIN_DAG = '''"""STAND-IN for tests and benchmarks only: a maintenance DAG with the real id and conf contract."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag, task


@dag(
    dag_id="pitcrew_maintenance_{model}",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=64,
    tags=["pitcrew", "test-stand-in"],
)
def standin_maintenance():
    @task
    def record_trigger(**context):
        conf = context["dag_run"].conf
        return {{"model": conf.get("model"), "trigger": conf.get("trigger"), "alert": conf.get("alert")}}

    record_trigger()


standin_maintenance()
'''


def write_dags_folder(
    folder: Path, models: tuple[str, ...] = ("textclf",), extra: tuple[Path, ...] = ()
) -> Path:
    """A DAGs folder with one stand-in maintenance DAG per model, plus copies of ``extra`` DAG files."""
    folder.mkdir(parents=True, exist_ok=True)
    for model in models:
        (folder / f"standin_maintenance_{model}.py").write_text(STANDIN_DAG.format(model=model))
    for path in extra:
        shutil.copy2(path, folder / path.name)
    return folder


def write_fast_deploy(
    target: Path,
    *,
    rule_for_s: int = 1,
    interval_s: int = 1,
    repeat_s: int = 2,
    group_wait_s: int = 1,
    group_interval_s: int = 1,
    windows: dict[str, str] | None = None,
    source: Path | None = None,
) -> Path:
    """Copy ``deploy/`` (or ``source``) to ``target`` with rule ``for:`` and group timings in seconds.

    :param windows: range selectors to replace in every rule expression, e.g. ``{"[6h]": "[20m]"}``, for
        a demo that runs on compressed time; thresholds are never changed.
    """
    shutil.copytree(source or REPO_ROOT / "deploy", target, dirs_exist_ok=True)
    for rules_path in (target / "prometheus" / "rules").glob("*.yml"):
        rules = yaml.safe_load(rules_path.read_text())
        for group in rules["groups"]:
            group["interval"] = f"{interval_s}s"
            for rule in group["rules"]:
                for long, short in (windows or {}).items():
                    rule["expr"] = str(rule["expr"]).replace(long, short)
                if "alert" in rule:
                    rule["for"] = f"{rule_for_s}s"
        rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
    am_path = target / "alertmanager" / "alertmanager.yml"
    am = yaml.safe_load(am_path.read_text())
    am["route"].update(
        {
            "group_wait": f"{group_wait_s}s",
            "group_interval": f"{group_interval_s}s",
            "repeat_interval": f"{repeat_s}s",
        }
    )
    am_path.write_text(yaml.safe_dump(am, sort_keys=False))
    return target


def write_models_file(target: Path, *, max_auto_runs_per_day: int, alert_cooldown_s: int = 3600) -> Path:
    """The repo's models file with the automatic-run cap and cooldown replaced."""
    data = yaml.safe_load((REPO_ROOT / "models.yaml").read_text())
    for entry in data["models"]:
        entry["max_auto_runs_per_day"] = max_auto_runs_per_day
        entry["alert_cooldown_s"] = alert_cooldown_s
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target
