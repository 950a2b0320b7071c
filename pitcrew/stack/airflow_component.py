"""Airflow 3 in the local stack: api-server, scheduler, dag-processor and triggerer, and the environment they share.

The environment carries Airflow's configuration, the secrets all four processes must agree on, pitcrew's
settings and the Airflow connections every task uses (docs/design.md, "Connections").
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from pitcrew.settings import Settings
from pitcrew.stack.base import (
    Component,
    Health,
    Process,
    StackError,
    base_env,
    create_private,
    grafana_token,
    http_health,
    private_dir,
    stack_secret,
    venv_bin,
    webhook_hmac_secret,
    webhook_token,
)  # fmt: skip
from pitcrew.stack.topology import AIRFLOW_PROCESSES

#: Users of the simple auth manager: ``admin`` (Admin), ``approver`` (Op: answers approvals assigned to
#: it), ``operator`` (Op, in no model's approvers: what an Op who may not approve sees), ``viewer`` (Viewer),
#: and ``pitcrew`` (Viewer), the read-only service user tasks call the REST API as (the
#: ``pitcrew_airflow_api`` connection: the swap reads who answered its approval). `pitcrew airflow-init`
#: writes their passwords.
SIMPLE_AUTH_MANAGER_USERS = "admin:admin,approver:op,operator:op,viewer:viewer,pitcrew:viewer"


#: The triggerer's log server would listen on every interface (Airflow has no option to bind it); its
#: logs are files in the log folder the API server reads, so it serves none.
EXTRA_ARGS = {"triggerer": ("--skip-serve-logs",)}


SECRET_SETTINGS = ("PITCREW_WEBHOOK_TOKEN", "PITCREW_GRAFANA_TOKEN", "PITCREW_WEBHOOK_HMAC_SECRET")


def passwords_file(settings: Settings) -> Path:
    return settings.home_dir / "airflow" / "passwords.json"


def airflow_env(settings: Settings) -> dict[str, str]:
    """Airflow configuration of the embedded stack (SQLite, LocalExecutor), as ``AIRFLOW__SECTION__KEY``."""
    home = settings.home_dir / "airflow"
    env = base_env()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": _fernet_key(settings),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": SIMPLE_AUTH_MANAGER_USERS,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # Workers call the API server's execution API: without the real address every task fails.
            "AIRFLOW__API__BASE_URL": settings.airflow_url,
            "AIRFLOW__API__HOST": settings.host,
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": stack_secret(settings, "airflow_api_secret_key"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow_url}/execution/",
            # All processes must sign and verify task tokens with the same key.
            "AIRFLOW__API_AUTH__JWT_SECRET": stack_secret(settings, "airflow_jwt_secret"),
            "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # pitcrew code (operators, monitoring, training) is importable by tasks and the plugin.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(settings_repo_root()), env.get("PYTHONPATH", "")) if p
            ),
        }
    )
    # Tasks and the webhook plugin read the same settings as the CLI that started the stack, except the
    # secrets: those they read from the secrets folder (pitcrew.stack.base.stack_secret).
    env.update({k: v for k, v in settings.as_env().items() if k not in SECRET_SETTINGS})
    env["PITCREW_MODEL_REPOSITORY"] = str(settings.repository_dir)
    # Connections the Hooks use by default; they hold no secret. The alert webhook's connection (its
    # password is the webhook token) is written into the metadata database by `pitcrew airflow-init`.
    env["AIRFLOW_CONN_MLFLOW_DEFAULT"] = json.dumps({"conn_type": "mlflow", "host": settings.mlflow_url})
    env["AIRFLOW_CONN_TRITON_DEFAULT"] = json.dumps(
        {"conn_type": "triton", "host": settings.host, "port": settings.triton_http_port,
         "extra": {"repository": str(settings.repository_dir)}}
    )  # fmt: skip
    env["AIRFLOW_CONN_PROMETHEUS_DEFAULT"] = json.dumps(
        {"conn_type": "prometheus", "host": settings.prometheus_url}
    )
    return env


def settings_repo_root() -> Path:
    from pitcrew.settings import REPO_ROOT

    return REPO_ROOT


def _fernet_key(settings: Settings) -> str:
    path = settings.secrets_path / "airflow_fernet_key"
    if not path.exists():
        from cryptography.fernet import Fernet

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Two processes starting at once must not encrypt with different keys: the first file written wins.
        return create_private(path, Fernet.generate_key().decode()).strip()
    return path.read_text().strip()


def airflow_password(settings: Settings, user: str = "admin") -> str:
    """A user's password as the simple auth manager generated it (written as JSON on first start).

    Users of the local stack: :data:`SIMPLE_AUTH_MANAGER_USERS`.
    """
    path = passwords_file(settings)
    try:
        return json.loads(path.read_text())[user]
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise StackError(f"airflow: no password for {user!r} in {path}; is the stack up?") from exc


def airflow_admin_password(settings: Settings) -> str:
    return airflow_password(settings, "admin")


def run_airflow_init(settings: Settings, env: dict[str, str], cwd: Path) -> None:
    """`pitcrew airflow-init` under the stack's Airflow environment: the same code compose's init runs."""
    # The Airflow home holds airflow.db (connections, the webhook's included) and the users' passwords.
    private_dir(cwd)
    # Airflow's processes read the webhook secrets from the secrets folder only (SECRET_SETTINGS): write
    # the values configured here into it first, so airflow-init's connection carries them.
    for secret in (webhook_token, grafana_token, webhook_hmac_secret):
        secret(settings)
    result = subprocess.run(
        [str(venv_bin() / "pitcrew"), "airflow-init"], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise StackError(f"airflow: `pitcrew airflow-init` failed:\n{tail}")


def airflow_component(settings: Settings, env_for: Callable[[Settings], dict[str, str]] = airflow_env) -> Component:
    """Airflow's four processes under the environment ``env_for`` builds (embedded or distributed)."""
    home = settings.home_dir / "airflow"

    def prepare() -> None:
        run_airflow_init(settings, env_for(settings), home)

    def processes() -> list[Process]:
        env = env_for(settings)
        private_dir(home)
        return [
            Process(f"airflow-{sub}", [str(venv_bin() / "airflow"), sub, *EXTRA_ARGS.get(sub, ())], env, home)
            for sub in AIRFLOW_PROCESSES
        ]

    def health() -> Health:
        def all_healthy(response: httpx.Response) -> bool:
            body = response.json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            return all(body.get(p, {}).get("status") == "healthy" for p in parts)

        return http_health(f"{settings.airflow_url}/api/v2/monitor/health", all_healthy)

    return Component(
        name="airflow",
        url=settings.airflow_url,
        ports=[settings.airflow_port],
        processes=processes,
        health=health,
        prepare=prepare,
    )
