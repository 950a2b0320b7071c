"""A real MLflow (tracking and registry) on a SQLite store, without a server, behind the ``mlflow_default``
connection. Import ``mlflow_template`` into a test module (``# noqa: F401``) and call :func:`sqlite_mlflow`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from operators.mlflow_hook import RETRY_ENV_DEFAULTS


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated store: creating one takes seconds of schema migrations, copying it milliseconds."""
    path = tmp_path_factory.getbasetemp() / "mlflow-template" / "mlflow.db"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(path.parent)
            MlflowClient(tracking_uri=f"sqlite:///{path}.tmp").search_experiments(max_results=1)
        Path(f"{path}.tmp").replace(path)
    return path


def sqlite_mlflow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, template: Path) -> MlflowClient:
    """A fresh store in ``tmp_path`` as the ``mlflow_default`` connection; a client on it."""
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
