"""A private local stack for the alert path: a DAGs folder with stand-in maintenance DAGs, and a models file.

Used by the alert integration tests and ``benchmarks/alert_latency.py``, together with
:func:`pitcrew.demo.write_fast_deploy` (the compressed-time copy of ``deploy/`` the demo also runs on).
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
