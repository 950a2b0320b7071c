"""`pitcrew airflow-init`: the one set-up step of every deployment.

The embedded stack, the distributed profile and compose's ``airflow-init`` service all run this code, in
a process whose environment is already Airflow's (``AIRFLOW__*``, ``PITCREW_*``). It is idempotent:
run it again after an upgrade and it migrates, then leaves what exists alone.

1. Check that every path of the models file lies on the declared shared storage (with Celery, a worker
   on another machine or container can only read what is shared).
2. ``airflow db migrate``.
3. Pools (:data:`pitcrew.stack.topology.POOLS`).
4. Passwords of the simple auth manager's users, in a 0600 file.
5. The ``pitcrew_webhook`` connection, whose password is the webhook token read from the secrets folder
   (extra: the HMAC secret and Grafana's token, which the webhook plugin reads), so no token travels in
   an environment variable or a command line; the ``pitcrew_airflow_api``
   connection (the REST API as the read-only service user ``pitcrew``, when the simple auth manager's
   passwords file has it); and a check that the Hooks' other connections resolve.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from pitcrew.models_file import load_models_file
from pitcrew.settings import Settings
from pitcrew.stack.base import StackError, grafana_token, webhook_hmac_secret, webhook_token, write_private
from pitcrew.stack.topology import CONNECTION_IDS, POOLS

WEBHOOK_CONN_ID = "pitcrew_webhook"
API_CONN_ID = "pitcrew_airflow_api"
#: The read-only user tasks call the REST API as (a Viewer: it reads who answered an approval).
SERVICE_USER = "pitcrew"
MODEL_PATH_FIELDS = ("train_data", "golden_data", "inference_log", "feedback")


def check_shared_storage(settings: Settings, executor: str) -> list[str]:
    """Paths of the models file (and the model repository) that lie outside the shared storage.

    The embedded stack runs every task on this machine, so there is nothing to check there. With Celery,
    the shared storage is ``PITCREW_SHARED_DIRS`` (default: the pitcrew home and the model repository).
    """
    if executor != "CeleryExecutor":
        return []
    roots = settings.shared_roots
    problems = []

    def outside(path: str) -> bool:
        if "://" in path and not path.startswith("file://"):
            return False  # object storage (s3://, gs://) is reachable from every worker
        local = Path(path.removeprefix("file://")).resolve()
        return not any(local.is_relative_to(r) for r in roots)

    if outside(str(settings.repository_dir)):
        problems.append(f"model repository {settings.repository_dir}")
    for entry in load_models_file(settings.models_file).models:
        for field in MODEL_PATH_FIELDS:
            value = getattr(entry, field)
            if value is not None and outside(value):
                problems.append(f"{entry.name}.{field} {value}")
    return problems


def migrate() -> None:
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise StackError(f"`airflow db migrate` failed:\n{tail}")


def ensure_pools() -> None:
    from airflow.models.pool import Pool

    for name, (slots, description) in POOLS.items():
        Pool.create_or_update_pool(name, slots, description, include_deferred=False)


def _upsert_connection(wanted) -> None:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        existing = session.query(Connection).filter(Connection.conn_id == wanted.conn_id).one_or_none()
        if existing is None:
            session.add(wanted)
            return
        for attr in ("conn_type", "host", "port", "schema", "login", "password", "extra"):
            setattr(existing, attr, getattr(wanted, attr))


def ensure_webhook_connection(settings: Settings) -> None:
    """The alert webhook the watch DAG posts to; its bearer token (Alertmanager's) is the password, the plugin
    reads the HMAC secret and Grafana's token from the extra (docs/design.md)."""
    from urllib.parse import urlsplit

    from airflow.models.connection import Connection

    url = urlsplit(settings.airflow_task_url)
    _upsert_connection(Connection(
        conn_id=WEBHOOK_CONN_ID, conn_type="http", host=url.hostname, port=url.port, schema=url.scheme,
        password=webhook_token(settings),
        extra=json.dumps({"hmac_secret": webhook_hmac_secret(settings),
                          "grafana_token": grafana_token(settings)}),
    ))  # fmt: skip


def ensure_api_connection(settings: Settings, passwords: Path | None) -> bool:
    """The REST API as tasks reach it, as :data:`SERVICE_USER`, when the simple auth manager's passwords
    file has that user; otherwise (another auth manager) the deployment defines the connection itself."""
    from urllib.parse import urlsplit

    from airflow.models.connection import Connection

    if passwords is None or not passwords.exists():
        return False
    password = json.loads(passwords.read_text()).get(SERVICE_USER)
    if not password:
        return False
    url = urlsplit(settings.airflow_task_url)
    _upsert_connection(Connection(
        conn_id=API_CONN_ID, conn_type="http", host=url.hostname, port=url.port, schema=url.scheme,
        login=SERVICE_USER, password=password,
    ))  # fmt: skip
    return True


def missing_connections() -> list[str]:
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    missing = []
    for conn_id in CONNECTION_IDS:
        try:
            Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            missing.append(conn_id)
    return missing


def ensure_passwords(path: Path, users: str) -> list[str]:
    """Add a generated password for each user of ``name:role,...`` that has none; return who got one."""
    # A folder it creates is the owner's alone (the embedded stack's is the Airflow home, with airflow.db).
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    current = json.loads(path.read_text()) if path.exists() else {}
    added = []
    for spec in filter(None, (u.strip() for u in users.split(","))):
        name = spec.split(":", 1)[0]
        if name not in current:
            current[name] = secrets.token_urlsafe(12)
            added.append(name)
    write_private(path, json.dumps(current))
    return added


def airflow_init(settings: Settings) -> list[str]:
    """Run every step; return one line per thing done. Raises StackError naming what is wrong."""
    from airflow.configuration import conf

    executor = conf.get("core", "executor")
    outside = check_shared_storage(settings, executor)
    if outside:
        raise StackError(
            "these paths are not on the shared storage every worker mounts ("
            + ", ".join(str(r) for r in settings.shared_roots)
            + "): " + "; ".join(outside)
            + ". Move them under it, or declare their folder in PITCREW_SHARED_DIRS."
        )  # fmt: skip
    done = [f"shared storage checked ({executor})"]
    migrate()
    done.append("database migrated")
    ensure_pools()
    done.append("pools: " + ", ".join(f"{n}={s}" for n, (s, _) in POOLS.items()))
    users_file = conf.get("core", "simple_auth_manager_passwords_file", fallback="")
    users = conf.get("core", "simple_auth_manager_users", fallback="")
    passwords = Path(users_file) if users_file and users else None
    if passwords is not None:
        added = ensure_passwords(passwords, users)
        done.append(f"users: passwords generated for {', '.join(added) or 'nobody new'} in {users_file}")
    ensure_webhook_connection(settings)
    ensure_api_connection(settings, passwords)
    missing = missing_connections()
    if missing:
        raise StackError(f"connections not defined: {', '.join(missing)} (set AIRFLOW_CONN_<ID> for each)")
    done.append("connections: " + ", ".join(CONNECTION_IDS))
    return done
