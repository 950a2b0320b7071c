"""The distributed profile: its environment, its workers, its datastores (no server is started)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitcrew.settings import Settings
from pitcrew.stack import datastores, topology, worker_identity
from pitcrew.stack.base import StackError, stack_secret
from pitcrew.stack.distributed import (
    HOSTNAME_CALLABLE,
    distributed_airflow_env,
    distributed_components,
    worker_component,
    worker_env,
)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # base_env() copies this process's environment: keep a developer's PITCREW_* out of the assertions.
    for name in list(os.environ):
        if name.startswith("PITCREW_"):
            monkeypatch.delenv(name)
    return Settings(home=tmp_path / "home", postgres_port=31432, redis_port=31379, airflow_port=31080)


class TestDistributedAirflowEnv:
    def test_celery_on_postgres_and_redis(self, settings: Settings) -> None:
        env = distributed_airflow_env(settings)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__DEFAULT_QUEUE"] == "default" == topology.DEFAULT_QUEUE
        assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == HOSTNAME_CALLABLE
        assert (
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
            == "postgresql+psycopg2://airflow@127.0.0.1:31432/airflow"
        )
        assert (
            env["AIRFLOW__CELERY__RESULT_BACKEND"]
            == "db+postgresql+psycopg2://airflow@127.0.0.1:31432/airflow"
        )
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:")
        assert env["AIRFLOW__CELERY__BROKER_URL"].endswith("@127.0.0.1:31379/0")
        assert env["AIRFLOW__CORE__PARALLELISM"] == str(sum(w.concurrency for w in topology.WORKERS))

    def test_hostname_callable_is_importable(self) -> None:
        module, _, name = HOSTNAME_CALLABLE.rpartition(".")
        assert module == worker_identity.__name__
        assert getattr(worker_identity, name) is worker_identity.hostname

    def test_no_database_password_in_urls(self, settings: Settings) -> None:
        env = distributed_airflow_env(settings)
        postgres_password = stack_secret(settings, "postgres_password")
        redis_password = stack_secret(settings, "redis_password")
        for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
            assert postgres_password not in env[name], name
            assert redis_password not in env[name], name
        # Redis has no password file: the broker URL is the one place its password lives.
        assert f":{redis_password}@" in env["AIRFLOW__CELERY__BROKER_URL"]
        assert postgres_password not in env["AIRFLOW__CELERY__BROKER_URL"]

    def test_pgpassfile_is_private_and_matches_the_server(self, settings: Settings) -> None:
        env = distributed_airflow_env(settings)
        path = Path(env["PGPASSFILE"])
        assert path.parent == settings.secrets_path
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        password = stack_secret(settings, "postgres_password")
        assert path.read_text() == f"127.0.0.1:31432:*:airflow:{password}\n"
        # Stable: a second environment keeps the same file and password.
        assert distributed_airflow_env(settings)["PGPASSFILE"] == str(path)
        assert path.read_text() == f"127.0.0.1:31432:*:airflow:{password}\n"

    def test_every_declared_name_is_set(self, settings: Settings) -> None:
        """topology.AIRFLOW_ENV_NAMES is what compose sets too; the local profile must set each."""
        env = distributed_airflow_env(settings)
        missing = [name for name in topology.AIRFLOW_ENV_NAMES if name not in env]
        assert missing == []

    def test_shared_storage_secrets_and_internal_url(self, settings: Settings) -> None:
        env = distributed_airflow_env(settings)
        assert json.loads(env["PITCREW_SHARED_DIRS"]) == [str(p) for p in settings.shared_roots]
        assert json.loads(env["PITCREW_SHARED_DIRS"]) == [
            str(settings.home_dir),
            str(settings.home_dir / "model_repository"),
        ]
        assert env["PITCREW_SECRETS_DIR"] == str(settings.home_dir / "secrets")
        assert env["PITCREW_AIRFLOW_INTERNAL_URL"] == "http://127.0.0.1:31080"
        assert "AIRFLOW_CONN_PITCREW_WEBHOOK" not in env


class TestWorkers:
    def test_each_worker_has_its_own_home_and_name(self, settings: Settings) -> None:
        envs = {w.queue: worker_env(settings, w) for w in topology.WORKERS}
        for w in topology.WORKERS:
            assert envs[w.queue]["AIRFLOW_HOME"] == str(settings.home_dir / "workers" / w.queue / "airflow")
            assert envs[w.queue]["PITCREW_WORKER_NAME"] == w.worker_name
        default, gpu = envs["default"], envs["gpu"]
        assert default["PITCREW_WORKER_NAME"] != gpu["PITCREW_WORKER_NAME"]
        differing = {k for k in default.keys() | gpu.keys() if default.get(k) != gpu.get(k)}
        assert differing == {"AIRFLOW_HOME", "PITCREW_WORKER_NAME"}

    def test_worker_env_is_the_distributed_env_plus_identity(self, settings: Settings) -> None:
        base = distributed_airflow_env(settings)
        env = worker_env(settings, topology.worker("gpu"))
        assert {k: v for k, v in env.items() if k not in ("AIRFLOW_HOME", "PITCREW_WORKER_NAME")} == {
            k: v for k, v in base.items() if k != "AIRFLOW_HOME"
        }

    @pytest.mark.parametrize("queue", topology.QUEUES)
    def test_worker_consumes_its_queue_only(self, settings: Settings, queue: str) -> None:
        worker = topology.worker(queue)
        component = worker_component(settings, worker)
        assert component.name == f"worker-{queue}"
        assert component.ports == []
        [proc] = component.processes()
        assert proc.name == worker.component
        argv = proc.argv
        assert Path(argv[0]).name == "airflow"
        assert argv[1:3] == ["celery", "worker"]
        assert argv.count("--queues") == 1
        assert argv[argv.index("--queues") + 1] == queue
        assert argv.count("--concurrency") == 1
        assert argv[argv.index("--concurrency") + 1] == str(worker.concurrency)
        assert argv[argv.index("--celery-hostname") + 1] == f"{worker.service}@%h"
        assert "--skip-serve-logs" in argv
        assert proc.cwd == settings.home_dir / "workers" / queue
        assert proc.cwd.is_dir()
        assert proc.env == worker_env(settings, worker)
        assert proc.user is None

    def test_gpu_worker_runs_one_task_at_a_time(self) -> None:
        gpu = topology.worker("gpu")
        assert gpu.concurrency == 1
        assert gpu.component == "worker-gpu"
        assert gpu.worker_name == gpu.service == "airflow-worker-gpu"

    def test_unknown_queue_lists_the_queues(self) -> None:
        with pytest.raises(KeyError, match=r"no worker consumes queue 'cpu'; queues: default, gpu"):
            topology.worker("cpu")


class TestWorkerIdentity:
    def test_worker_name_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PITCREW_WORKER_NAME", "airflow-worker-gpu")
        assert worker_identity.hostname() == "airflow-worker-gpu"

    def test_fqdn_without_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PITCREW_WORKER_NAME", raising=False)
        monkeypatch.setattr(worker_identity.socket, "getfqdn", lambda: "box.example.org")
        assert worker_identity.hostname() == "box.example.org"

    def test_empty_env_falls_back_to_fqdn(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PITCREW_WORKER_NAME", "")
        monkeypatch.setattr(worker_identity.socket, "getfqdn", lambda: "box.example.org")
        assert worker_identity.hostname() == "box.example.org"


class TestDistributedComponents:
    def test_start_order(self, settings: Settings) -> None:
        names = [c.name for c in distributed_components(settings)]
        assert names[:2] == ["postgres", "redis"]
        assert {"worker-default", "worker-gpu", "airflow", "mlflow", "triton"} <= set(names)
        assert len(names) == len(set(names))
        # Workers start after `pitcrew airflow-init` (airflow's prepare) has migrated the database.
        assert names.index("airflow") < names.index("worker-default")
        assert names.index("airflow") < names.index("worker-gpu")
        assert names.index("redis") < names.index("airflow")

    def test_airflow_and_mlflow_use_postgres(self, settings: Settings) -> None:
        by_name = {c.name: c for c in distributed_components(settings)}
        airflow_procs = by_name["airflow"].processes()
        assert {p.env["AIRFLOW__CORE__EXECUTOR"] for p in airflow_procs} == {"CeleryExecutor"}
        [mlflow] = by_name["mlflow"].processes()
        uri = mlflow.argv[mlflow.argv.index("--backend-store-uri") + 1]
        assert uri == "postgresql+psycopg2://airflow@127.0.0.1:31432/mlflow"
        assert Path(mlflow.env["PGPASSFILE"]) == settings.secrets_path / "pgpass"
        assert stack_secret(settings, "postgres_password") not in " ".join(mlflow.argv)


class TestRedis:
    def test_password_in_a_private_config_file_not_argv(self, settings: Settings) -> None:
        assert shutil.which("redis-server"), (
            "redis-server is not on PATH: sudo apt-get install -y redis-server"
        )
        component = datastores.redis_component(settings)
        assert component.ports == [31379]
        [proc] = component.processes()
        config = settings.home_dir / "redis" / "redis.conf"
        assert proc.argv[1:] == [str(config)]
        assert oct(config.stat().st_mode & 0o777) == "0o600"
        password = stack_secret(settings, "redis_password")
        lines = config.read_text().splitlines()
        assert f"requirepass {password}" in lines
        assert "bind 127.0.0.1" in lines
        assert "port 31379" in lines
        assert all(password not in arg for arg in proc.argv)
        assert all(password not in value for value in proc.env.values())

    def test_rewritten_config_stays_private(self, settings: Settings) -> None:
        assert shutil.which("redis-server"), (
            "redis-server is not on PATH: sudo apt-get install -y redis-server"
        )
        config = settings.home_dir / "redis" / "redis.conf"
        config.parent.mkdir(parents=True)
        config.write_text("stale\n")
        config.chmod(0o600)
        datastores.redis_component(settings).processes()
        assert oct(config.stat().st_mode & 0o777) == "0o600"
        assert "stale" not in config.read_text()

    def test_missing_redis_server_names_the_package(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(datastores.shutil, "which", lambda _: None)
        with pytest.raises(StackError, match="apt-get install -y redis-server"):
            datastores.redis_component(settings).processes()


class TestPostgres:
    @pytest.fixture
    def open_dir(self) -> Iterator[Path]:
        # Not under pytest's tmp_path: its parents are 0700, which is exactly what the check rejects.
        path = Path(tempfile.mkdtemp(prefix="pitcrew-pg-"))
        path.chmod(0o711)
        try:
            yield path
        finally:
            shutil.rmtree(path)

    def test_reachable_folder_passes(self, open_dir: Path) -> None:
        (open_dir / "a").mkdir(mode=0o711)
        (open_dir / "a").chmod(0o711)
        assert datastores._check_reachable(open_dir / "a" / "postgres", "postgres") is None
        (open_dir / "a").chmod(0o710)  # the same folder, closed to others: refused
        with pytest.raises(StackError, match="cannot enter"):
            datastores._check_reachable(open_dir / "a" / "postgres", "postgres")

    def test_closed_parent_is_named(self, open_dir: Path) -> None:
        closed = open_dir / "closed"
        closed.mkdir()
        closed.chmod(0o750)  # group may enter, others may not
        (closed / "inner").mkdir(mode=0o755)
        assert closed.owner() != "postgres"
        with pytest.raises(
            StackError,
            match=rf"`postgres` user cannot enter {re.escape(str(closed))} \(mode 0o750\).*PITCREW_POSTGRES_DATA",
        ):
            datastores._check_reachable(closed / "inner" / "postgres", "postgres")

    def test_closed_parent_owned_by_the_user_passes(self, open_dir: Path) -> None:
        closed = open_dir / "closed"
        closed.mkdir(mode=0o700)
        closed.chmod(0o700)
        assert datastores._check_reachable(closed / "postgres", closed.owner()) is None
        assert closed.owner() != "postgres"
        with pytest.raises(StackError, match="cannot enter"):  # the same folder, for another user
            datastores._check_reachable(closed / "postgres", "postgres")

    def test_database_url_has_no_password(self, settings: Settings) -> None:
        password = stack_secret(settings, "postgres_password")
        url = datastores.database_url(settings, "mlflow")
        assert url == "postgresql+psycopg2://airflow@127.0.0.1:31432/mlflow"
        assert password not in url

    def test_component_listens_on_the_host_and_port(self, settings: Settings) -> None:
        component = datastores.postgres_component(settings)
        assert component.ports == [31432]
        [proc] = component.processes()
        assert proc.argv[proc.argv.index("-p") + 1] == "31432"
        assert "listen_addresses=127.0.0.1" in proc.argv
        assert proc.argv[proc.argv.index("-D") + 1] == str(settings.home_dir / "postgres" / "data")
        assert proc.user == ("postgres" if os.geteuid() == 0 else None)
        assert stack_secret(settings, "postgres_password") not in " ".join(proc.argv)
