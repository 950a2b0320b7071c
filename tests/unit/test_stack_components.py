from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from pitcrew.settings import Settings
from pitcrew.stack import airflow_component as airflow_component_module
from pitcrew.stack import airflow_init, base, components
from pitcrew.stack.components import (
    AIRFLOW_PROCESSES,
    StackError,
    airflow_env,
    alertmanager_config,
    grafana_token,
    prepare_triton_backends,
    prometheus_config,
    triton_env,
    webhook_hmac_secret,
    webhook_token,
)
from pitcrew.stack.runner import Stack


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home", airflow_port=31080, triton_metrics_port=31002, alertmanager_port=31093
    )


class TestConfigs:
    def test_prometheus_scrapes_triton_and_alerts_to_alertmanager(self, settings: Settings) -> None:
        config = prometheus_config(settings)
        targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
        assert targets["triton"] == ["127.0.0.1:31002"]
        assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:31093"]
        assert config["rule_files"][0].endswith("deploy/prometheus/rules/*.yml")

    def test_alertmanager_posts_to_the_plugin_with_the_token(self, settings: Settings) -> None:
        config = alertmanager_config(settings, "tok")
        hooks = [h for r in config["receivers"] for h in r.get("webhook_configs", [])]
        assert hooks, "deploy/alertmanager/alertmanager.yml must have a webhook receiver"
        for hook in hooks:
            assert hook["url"] == "http://127.0.0.1:31080/pitcrew/alerts"
            assert hook["http_config"]["authorization"] == {"type": "Bearer", "credentials": "tok"}
        yaml.safe_dump(config)  # serialisable as written to disk

    def test_generated_secret_is_stable_and_private(self, settings: Settings) -> None:
        first = webhook_token(settings)
        assert len(first) >= 32
        assert webhook_token(settings) == first
        path = settings.home_dir / "secrets" / "webhook_token"
        assert oct(path.stat().st_mode & 0o777) == "0o600"

    def test_configured_token_wins(self, tmp_path: Path) -> None:
        assert webhook_token(Settings(home=tmp_path, webhook_token="given")) == "given"

    def test_airflow_env_shares_secrets_and_base_url(self, settings: Settings) -> None:
        env = airflow_env(settings)
        assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:31080"
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == airflow_env(settings)["AIRFLOW__API_AUTH__JWT_SECRET"]
        assert env["PITCREW_AIRFLOW_PORT"] == "31080"
        assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"

    def test_every_address_a_task_needs_is_a_connection(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Tasks read servers from Airflow connections only; the stack defines each, and each hook reads it."""
        from operators.mlflow_hook import MlflowHook
        from operators.prometheus_hook import PrometheusHook
        from operators.triton_hook import TritonHook

        conns = {k: v for k, v in airflow_env(settings).items() if k.startswith("AIRFLOW_CONN_")}
        assert set(conns) == {
            "AIRFLOW_CONN_MLFLOW_DEFAULT",
            "AIRFLOW_CONN_TRITON_DEFAULT",
            "AIRFLOW_CONN_PROMETHEUS_DEFAULT",
        }
        for name, value in conns.items():
            monkeypatch.setenv(name, value)
        assert MlflowHook().tracking_uri == settings.mlflow_url
        assert PrometheusHook().get_url() == settings.prometheus_url
        assert TritonHook().params["url"] == settings.triton_http_url
        assert TritonHook().params["repository"] == settings.repository_dir

    @pytest.mark.parametrize("configured", [False, True])
    def test_webhook_secrets_never_travel_in_the_environment(self, tmp_path: Path, configured: bool) -> None:
        """`pitcrew airflow-init` writes the pitcrew_webhook connection into the metadata DB instead."""
        given = {"webhook_token": "am-tok", "grafana_token": "gf-tok", "webhook_hmac_secret": "hm"}
        settings = Settings(home=tmp_path / "home", **(given if configured else {}))
        env = airflow_env(settings)
        assert "AIRFLOW_CONN_PITCREW_WEBHOOK" not in env
        secrets = {"webhook token": webhook_token(settings), "Grafana token": grafana_token(settings),
                   "HMAC secret": webhook_hmac_secret(settings)}  # fmt: skip
        for name, value in env.items():
            for what, secret in secrets.items():
                assert secret not in value, f"the {what} is in {name}"

    def test_prepare_writes_configured_secrets_before_airflow_init(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Airflow's processes read the secrets folder only: airflow-init's connection must carry the
        # values configured where the stack was started.
        settings = Settings(home=tmp_path / "home", webhook_token="am-tok", grafana_token="gf-tok",
                            webhook_hmac_secret="hm")  # fmt: skip
        seen: dict[str, str] = {}

        def fake_run(argv, **kwargs):
            seen.update({n: (settings.secrets_path / n).read_text() for n in ("webhook_token", "grafana_token",
                                                                               "webhook_hmac_secret")})  # fmt: skip
            return subprocess.CompletedProcess(argv, 0, "ok", "")

        monkeypatch.setattr(airflow_component_module.subprocess, "run", fake_run)
        components.airflow_component(settings).prepare()
        assert seen == {"webhook_token": "am-tok", "grafana_token": "gf-tok", "webhook_hmac_secret": "hm"}

    def test_webhook_connection_carries_grafanas_token_in_its_extra(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        written = []
        monkeypatch.setattr(airflow_init, "_upsert_connection", written.append)
        airflow_init.ensure_webhook_connection(settings)
        (conn,) = written
        assert conn.conn_id == "pitcrew_webhook" and conn.password == webhook_token(settings)
        assert json.loads(conn.extra) == {
            "hmac_secret": webhook_hmac_secret(settings), "grafana_token": grafana_token(settings)
        }
        assert grafana_token(settings) != webhook_token(settings)

    def test_only_the_triggerer_skips_serving_logs(self, settings: Settings) -> None:
        procs = {p.name: p for p in components.airflow_component(settings).processes()}
        assert set(procs) == {f"airflow-{sub}" for sub in AIRFLOW_PROCESSES}
        for name, proc in procs.items():
            assert proc.argv[1] == name.removeprefix("airflow-")
            assert ("--skip-serve-logs" in proc.argv) == (name == "airflow-triggerer"), proc.argv
            assert proc.cwd == settings.home_dir / "airflow"

    def test_prepare_runs_pitcrew_airflow_init_in_airflows_env(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[tuple[list[str], dict]] = []

        def fake_run(argv, **kwargs):
            calls.append((argv, kwargs))
            return subprocess.CompletedProcess(argv, 0, "ok", "")

        monkeypatch.setattr(airflow_component_module.subprocess, "run", fake_run)
        components.airflow_component(settings).prepare()
        assert len(calls) == 1
        argv, kwargs = calls[0]
        assert argv == [str(Path(sys.executable).parent / "pitcrew"), "airflow-init"]
        assert kwargs["env"] == airflow_env(settings)
        assert kwargs["cwd"] == settings.home_dir / "airflow"
        assert kwargs["cwd"].is_dir()

    def test_failed_airflow_init_names_the_command_and_its_output(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def fake_run(argv, **kwargs):  # noqa: ARG001
            return subprocess.CompletedProcess(argv, 2, "", "pitcrew airflow-init: error: models outside\n")

        monkeypatch.setattr(airflow_component_module.subprocess, "run", fake_run)
        with pytest.raises(StackError, match=r"(?s)`pitcrew airflow-init` failed.*models outside"):
            components.airflow_component(settings).prepare()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _slow_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every generated secret is unique and takes a while: concurrent generators overlap for sure."""
    counter = iter(range(1_000_000))

    def token(nbytes: int) -> str:
        time.sleep(0.05)
        return f"{os.getpid()}-{threading.get_ident()}-{next(counter)}"

    monkeypatch.setattr(base.secrets, "token_urlsafe", token)


def _generate(home: str) -> str:
    return base.stack_secret(Settings(home=Path(home)), "race")


class TestSecretFiles:
    def test_concurrent_threads_agree_on_one_secret(self, tmp_path: Path, monkeypatch, loose_umask) -> None:
        _slow_generator(monkeypatch)
        with ThreadPoolExecutor(8) as pool:
            values = list(pool.map(_generate, [str(tmp_path)] * 8))
        assert len(set(values)) == 1, values
        secrets_dir = Settings(home=tmp_path).secrets_path
        assert (secrets_dir / "race").read_text() == values[0]
        assert [p.name for p in secrets_dir.iterdir()] == ["race"]  # no temporary file left behind
        assert _mode(secrets_dir / "race") == 0o600

    def test_concurrent_processes_agree_on_one_secret(self, tmp_path: Path, monkeypatch, loose_umask) -> None:
        import multiprocessing

        _slow_generator(monkeypatch)  # inherited by the forked workers
        with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as pool:
            values = list(pool.map(_generate, [str(tmp_path)] * 4))
        assert len(set(values)) == 1, values
        secrets_dir = Settings(home=tmp_path).secrets_path
        assert [p.name for p in secrets_dir.iterdir()] == ["race"]
        assert _mode(secrets_dir / "race") == 0o600

    def test_a_configured_value_never_lands_in_a_file_others_opened(self, tmp_path: Path, loose_umask) -> None:
        # A secret file left readable (an older version, a copy): whoever opened it then must not read
        # the new value through that descriptor; the value goes into a new 0600 file renamed over it.
        settings = Settings(home=tmp_path, webhook_token="new-token")
        path = settings.secrets_path / "webhook_token"
        path.parent.mkdir(parents=True)
        path.write_text("old-token")
        path.chmod(0o644)
        with path.open() as opened_while_readable:
            assert webhook_token(settings) == "new-token"
            assert opened_while_readable.read() == "old-token"
        assert path.read_text() == "new-token" and _mode(path) == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["webhook_token"]

    def test_write_private_is_0600_whatever_the_umask(self, tmp_path: Path) -> None:
        old = os.umask(0)
        try:
            base.write_private(tmp_path / "f", "x")
            assert base.create_private(tmp_path / "g", "y") == "y"
            assert base.create_private(tmp_path / "g", "z") == "y"  # never overwrites
        finally:
            os.umask(old)
        assert _mode(tmp_path / "f") == _mode(tmp_path / "g") == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "g"]

    def test_airflow_home_is_the_owners_alone(self, settings: Settings, monkeypatch, loose_umask) -> None:
        # It holds airflow.db (the connections, the webhook's tokens among them) and passwords.json.
        home = settings.home_dir / "airflow"
        components.airflow_component(settings).processes()
        assert _mode(home) == 0o700
        home.chmod(0o755)  # created open by an older version: closed at the next start
        monkeypatch.setattr(airflow_component_module.subprocess, "run",
                            lambda argv, **kw: subprocess.CompletedProcess(argv, 0, "", ""))  # fmt: skip
        components.airflow_component(settings).prepare()
        assert _mode(home) == 0o700

    def test_passwords_file_folder_is_created_private(self, tmp_path: Path, loose_umask) -> None:
        path = tmp_path / "state" / "airflow" / "passwords.json"
        airflow_init.ensure_passwords(path, "admin:admin")
        assert _mode(path.parent) == 0o700 and _mode(path) == 0o600


class TestTriton:
    def test_backend_folder_has_the_stub_for_this_python(self, tmp_path: Path) -> None:
        backends = prepare_triton_backends(tmp_path / "backends")
        python = backends / "python"
        assert (python / "libtriton_python.so").resolve().exists()
        assert (python / "triton_python_backend_stub").stat().st_mode & 0o111
        prepare_triton_backends(tmp_path / "backends")  # idempotent

    def test_env_puts_this_libpython_first(self) -> None:
        import sysconfig

        env = triton_env()
        assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == sysconfig.get_config_var("LIBDIR")
        assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"


class TestPreflight:
    def test_port_in_use_names_component_and_setting(self, tmp_path: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            port = sock.getsockname()[1]
            settings = Settings(home=tmp_path, mlflow_port=port)
            stack = Stack(settings, [components.mlflow_component(settings)])
            with pytest.raises(
                StackError, match=rf"mlflow: port 127.0.0.1:{port} is already in use.*PITCREW_"
            ):
                stack.up()
        assert not (tmp_path / "run" / "mlflow.pid").exists()

    def test_missing_debian_package_names_the_fix(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(components.shutil, "which", lambda _: None)
        settings = Settings(home=tmp_path, prometheus_port=31990)
        stack = Stack(settings, [components.prometheus_component(settings)])
        with pytest.raises(StackError, match="apt-get install -y prometheus"):
            stack.up()

    def test_wrong_python_version(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sys, "version_info", (3, 12, 0))
        stack = Stack(Settings(home=tmp_path), [])
        with pytest.raises(StackError, match="needs Python 3.11"):
            stack.up()

    def test_missing_tritonserver_binary(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import pytriton

        fake = tmp_path / "site" / "pytriton"
        fake.mkdir(parents=True)
        monkeypatch.setattr(pytriton, "__file__", str(fake / "__init__.py"))
        settings = Settings(home=tmp_path)
        stack = Stack(settings, [components.triton_component(settings)])
        with pytest.raises(StackError, match="triton: no tritonserver binary"):
            stack.up()

    def test_failed_start_reports_log_tail_and_leaves_nothing(self, tmp_path: Path) -> None:
        settings = Settings(home=tmp_path, startup_timeout_s=20)
        broken = components.Component(
            name="broken",
            url="http://127.0.0.1:1",
            ports=[],
            processes=lambda: [
                components.Process(
                    "broken",
                    [sys.executable, "-c", "print('cannot bind'); raise SystemExit(3)"],
                    {},
                    tmp_path,
                )
            ],
            health=lambda: components.Health(False, "down"),
        )
        stack = Stack(settings, [broken])
        with pytest.raises(StackError, match=r"(?s)broken: process broken exited.*cannot bind"):
            stack.up()
        assert not (tmp_path / "run" / "broken.pid").exists()
