"""PostgreSQL and Redis of the distributed profile, from Debian's ``postgresql`` and ``redis-server``.

Both listen on the stack's host only and require a password from the secrets folder. PostgreSQL refuses
to run as root, so when the stack runs as root it runs the server as the ``postgres`` user in a data
directory of its own (never Debian's cluster). Clients find the password through libpq's ``PGPASSFILE``
(:func:`pgpass_file`), so no password appears in a database URL, a log or a command line.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from pitcrew.settings import Settings
from pitcrew.stack.base import Component, Health, Process, StackError, base_env, stack_secret, write_private

DB_USER = "airflow"
DATABASES = ("airflow", "mlflow")


# --------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------
def postgres_bin(name: str) -> str:
    """A server binary of the newest PostgreSQL Debian installed (they are not on PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return str(candidates[-1])
    found = shutil.which(name)
    if found is None:
        raise StackError(f"postgres: `{name}` not found; install it with `sudo apt-get install -y postgresql`")
    return found


def postgres_user() -> str | None:
    """``postgres`` when running as root (the server refuses root); otherwise the current user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise StackError("postgres: no `postgres` user; install the Debian package `postgresql`") from exc
    return "postgres"


def pgpass_file(settings: Settings) -> Path:
    """libpq's password file for the stack's database user (mode 0600, as libpq requires)."""
    path = settings.secrets_path / "pgpass"
    password = stack_secret(settings, "postgres_password")
    line = f"{settings.host}:{settings.postgres_port}:*:{DB_USER}:{password}\n"
    if not path.exists() or path.read_text() != line:
        write_private(path, line)
    return path


def database_url(settings: Settings, database: str, driver: str = "postgresql+psycopg2") -> str:
    """A SQLAlchemy URL without the password: libpq reads it from ``PGPASSFILE``."""
    return f"{driver}://{DB_USER}@{settings.host}:{settings.postgres_port}/{database}"


def _check_reachable(folder: Path, user: str) -> None:
    # The server runs as `user`: it must be able to enter every folder above its data directory.
    for parent in folder.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001 and parent.owner() != user:
            raise StackError(
                f"postgres: the `{user}` user cannot enter {parent} (mode {oct(mode & 0o777)}); "
                f"set PITCREW_POSTGRES_DATA to a folder it can reach, e.g. under /var/lib"
            )


def _run_as(user: str | None, argv: list[str], stdin: str | None = None) -> None:
    result = subprocess.run(argv, user=user, input=stdin, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise StackError(f"postgres: `{' '.join(argv[:2])}` failed: {(result.stdout + result.stderr)[-800:]}")


def init_postgres(settings: Settings) -> None:
    """Create the cluster (password auth only) and its two databases, once."""
    root = settings.postgres_data_dir
    data = root / "data"
    if (data / "PG_VERSION").exists():
        return
    user = postgres_user()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / "run").mkdir(exist_ok=True, mode=0o700)
    if user is not None:
        _check_reachable(root, user)
        for path in (root, root / "run"):
            shutil.chown(path, user, user)
    pwfile = root / "initdb-password"
    write_private(pwfile, stack_secret(settings, "postgres_password"))
    if user is not None:
        shutil.chown(pwfile, user, user)
    try:
        _run_as(user, [postgres_bin("initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}",
                       "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=UTF8",
                       "--no-instructions"])  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    # Single-user mode creates the databases before the server ever listens.
    statements = "".join(f"CREATE DATABASE {db} OWNER {DB_USER};\n" for db in DATABASES)
    _run_as(user, [postgres_bin("postgres"), "--single", "-D", str(data), "postgres"], stdin=statements)


def postgres_health(settings: Settings) -> Health:
    import psycopg2

    try:
        with psycopg2.connect(
            host=settings.host, port=settings.postgres_port, user=DB_USER, dbname="airflow",
            password=stack_secret(settings, "postgres_password"), connect_timeout=2,
        ) as conn, conn.cursor() as cursor:  # fmt: skip
            cursor.execute("SELECT 1")
    except psycopg2.Error as exc:
        return Health(False, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return Health(True, "ok")


def postgres_component(settings: Settings) -> Component:
    root = settings.postgres_data_dir

    def processes() -> list[Process]:
        argv = [
            postgres_bin("postgres"), "-D", str(root / "data"),
            "-c", f"listen_addresses={settings.host}", "-p", str(settings.postgres_port),
            "-c", f"unix_socket_directories={root / 'run'}",
            # Airflow's processes, two Celery workers and MLflow each keep a pool of connections.
            "-c", "max_connections=300",
        ]  # fmt: skip
        return [Process("postgres", argv, base_env(), root, user=postgres_user())]

    return Component(
        name="postgres",
        url=f"postgresql://{settings.host}:{settings.postgres_port}",
        ports=[settings.postgres_port],
        processes=processes,
        health=lambda: postgres_health(settings),
        prepare=lambda: init_postgres(settings),
    )


# --------------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------------
def broker_url(settings: Settings) -> str:
    """Celery's broker URL. Redis has no password file of its own, so this one URL carries it: it lives
    only in the environment of Airflow's processes, never in a log or on a command line."""
    password = stack_secret(settings, "redis_password")
    return f"redis://:{password}@{settings.host}:{settings.redis_port}/0"


def redis_component(settings: Settings) -> Component:
    home = settings.home_dir / "redis"

    def processes() -> list[Process]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis: `redis-server` not found; install it with `sudo apt-get install -y redis-server`")
        home.mkdir(parents=True, exist_ok=True)
        config = home / "redis.conf"
        # The password is in a 0600 config file, not in argv where `ps` would show it.
        write_private(
            config,
            f"bind {settings.host}\nport {settings.redis_port}\nprotected-mode yes\n"
            f"dir {home}\nrequirepass {stack_secret(settings, 'redis_password')}\n"
            # Queued Celery messages survive a restart of Redis.
            "appendonly yes\ndaemonize no\n",
        )
        return [Process("redis", [binary, str(config)], base_env(), home)]

    def health() -> Health:
        import redis

        try:
            client = redis.Redis.from_url(broker_url(settings), socket_timeout=2, socket_connect_timeout=2)
            client.ping()
        except redis.RedisError as exc:
            return Health(False, type(exc).__name__)
        return Health(True, "ok")

    return Component(
        name="redis",
        url=f"redis://{settings.host}:{settings.redis_port}",
        ports=[settings.redis_port],
        processes=processes,
        health=health,
    )
