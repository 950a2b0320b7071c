"""A real MLflow (tracking and registry) on a SQLite store, without a server, behind the ``mlflow_default``
connection. tests/unit/conftest.py registers the ``mlflow_template`` fixture for every unit test: request
it, and call :func:`sqlite_mlflow` with it. MLflow is imported when first used, not when the suite starts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlflow import MlflowClient


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated store: creating one takes seconds of schema migrations, copying it milliseconds."""
    path = tmp_path_factory.getbasetemp() / "mlflow-template" / "mlflow.db"
    if not path.exists():
        from mlflow import MlflowClient

        path.parent.mkdir(exist_ok=True)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(path.parent)
            MlflowClient(tracking_uri=f"sqlite:///{path}.tmp").search_experiments(max_results=1)
        Path(f"{path}.tmp").replace(path)
    return path


def sqlite_mlflow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, template: Path) -> MlflowClient:
    """A fresh store in ``tmp_path`` as the ``mlflow_default`` connection; a client on it."""
    from mlflow import MlflowClient

    from operators.mlflow_hook import RETRY_ENV_DEFAULTS

    db = tmp_path / "mlflow.db"
    shutil.copy(template, db)
    monkeypatch.chdir(tmp_path)  # MLflow's default ./mlruns artifact root
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": uri}))
    for (
        name,
        value,
    ) in RETRY_ENV_DEFAULTS.items():  # MlflowHook sets them in os.environ; undone after the test
        monkeypatch.setenv(name, value)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
