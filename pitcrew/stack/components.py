"""What each server of the local stack is: how to prepare it, the command that runs it, and its health check.

The environment each server needs (Triton's libpython and stub, Airflow's shared secrets and base URL)
is built here so that a user never sets it by hand.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from pitcrew.settings import Settings


class StackError(RuntimeError):
    """A component cannot be prepared, started or reached; the message names it and the fix."""


@dataclass(frozen=True)
class Process:
    """One OS process of a component (Airflow has four)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


@dataclass
class Component:
    name: str
    url: str
    ports: list[int]
    processes: Callable[[], list[Process]]
    health: Callable[[], Health]
    prepare: Callable[[], None] = field(default=lambda: None)


def venv_bin() -> Path:
    """The folder of the running interpreter's scripts (``airflow``, ``mlflow``)."""
    return Path(sys.executable).parent


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    # Servers spawn their own sub-commands (`airflow ...`, the Python stub): the venv must come first.
    env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def _http_health(url: str, expect: Callable[[httpx.Response], bool] | None = None) -> Health:
    try:
        response = httpx.get(url, timeout=3.0)
    except httpx.HTTPError as exc:
        return Health(False, f"{type(exc).__name__}")
    if response.status_code != 200:
        return Health(False, f"HTTP {response.status_code}")
    if expect is not None and not expect(response):
        return Health(False, f"unexpected answer: {response.text[:120]}")
    return Health(True, "ok")


def _secret(settings: Settings, name: str, nbytes: int = 32) -> str:
    """A secret generated once per stack home, so restarts keep tokens and sessions valid."""
    path = settings.home_dir / "secrets" / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(nbytes)
    path.write_text(value)
    path.chmod(0o600)
    return value


# --------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------
def mlflow_component(settings: Settings) -> Component:
    home = settings.home_dir / "mlflow"

    def processes() -> list[Process]:
        home.mkdir(parents=True, exist_ok=True)
        argv = [
            str(venv_bin() / "mlflow"), "server",
            "--host", settings.host, "--port", str(settings.mlflow_port),
            "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination", str(home / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        return [Process("mlflow", argv, base_env(), home)]

    return Component(
        name="mlflow",
        url=settings.mlflow_url,
        ports=[settings.mlflow_port],
        processes=processes,
        health=lambda: _http_health(f"{settings.mlflow_url}/health"),
    )


# --------------------------------------------------------------------------------------------------
# Triton
# --------------------------------------------------------------------------------------------------
def triton_paths() -> tuple[Path, Path, Path]:
    """(tritonserver binary, python backend folder, bundled shared libraries) of the nvidia-pytriton wheel."""
    try:
        import pytriton
    except ImportError as exc:
        raise StackError(
            "triton: nvidia-pytriton is not installed; run `pip install -r requirements.txt`"
        ) from exc
    root = Path(pytriton.__file__).parent / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.exists():
        raise StackError(f"triton: no tritonserver binary at {binary}; reinstall nvidia-pytriton")
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    return binary, root / "backends" / "python", libs


def triton_env() -> dict[str, str]:
    """Environment under which the bundled Triton runs Python-backend models with this venv's packages."""
    _, _, libs = triton_paths()
    env = base_env()
    libpython_dir = sysconfig.get_config_var("LIBDIR")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libpython_dir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p
    )
    # The Python backend would otherwise write <version>/__pycache__, which changes the version folder and
    # makes the next load call load that version again (DESIGN.md §5).
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def prepare_triton_backends(target: Path) -> Path:
    """Lay out a backend folder whose Python backend has the stub for *this* interpreter beside it.

    The wheel ships stubs for several Python versions in ``python_backend_stubs/X.Y``; Triton looks
    for the stub next to ``libtriton_python.so``. We build the folder under the stack home instead of
    writing into site-packages.
    """
    _, python_backend, _ = triton_paths()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = python_backend.parent.parent / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise StackError(f"triton: the wheel has no Python-backend stub for Python {version}")
    dest = target / "python"
    dest.mkdir(parents=True, exist_ok=True)
    for item in ("libtriton_python.so", "triton_python_backend_utils.py"):
        link = dest / item
        if not link.exists():
            link.symlink_to(python_backend / item)
    if not (dest / stub.name).exists():
        shutil.copy2(stub, dest / stub.name)
    return target


def triton_argv(settings: Settings, repository: Path, backends: Path, load_models: list[str]) -> list[str]:
    binary, _, _ = triton_paths()
    argv = [
        str(binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--model-control-mode=explicit",
        f"--http-address={settings.host}", f"--http-port={settings.triton_http_port}",
        f"--grpc-address={settings.host}", f"--grpc-port={settings.triton_grpc_port}",
        f"--metrics-address={settings.host}", f"--metrics-port={settings.triton_metrics_port}",
        "--allow-metrics=true",
        # Per-model latency quantiles (nv_inference_request_summary_us{quantile="0.99"}) for p99 alerts
        # and the canary; Triton exports only cumulative counters otherwise.
        "--metrics-config=summary_latencies=true",
        "--exit-timeout-secs=10",
        "--log-verbose=0",
    ]  # fmt: skip
    argv += [f"--load-model={name}" for name in load_models]
    return argv


def triton_component(settings: Settings) -> Component:
    home = settings.home_dir / "triton"

    def processes() -> list[Process]:
        settings.repository_dir.mkdir(parents=True, exist_ok=True)
        backends = prepare_triton_backends(home / "backends")
        # Load every model that has at least one version folder; others are loaded by `pitcrew deploy`.
        ready = sorted(
            p.name
            for p in settings.repository_dir.iterdir()
            if (p / "config.pbtxt").exists() and any(c.is_dir() and c.name.isdigit() for c in p.iterdir())
        )
        argv = triton_argv(settings, settings.repository_dir, backends, ready)
        return [Process("triton", argv, triton_env(), home)]

    def health() -> Health:
        ready = _http_health(f"http://{settings.triton_http_url}/v2/health/ready")
        if not ready.ok:
            return ready
        metrics = _http_health(settings.triton_metrics_url, lambda r: "nv_" in r.text)
        return Health(metrics.ok, "ok" if metrics.ok else f"metrics: {metrics.detail}")

    return Component(
        name="triton",
        url=f"http://{settings.triton_http_url}",
        ports=[settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port],
        processes=processes,
        health=health,
    )


# --------------------------------------------------------------------------------------------------
# Prometheus and Alertmanager (Debian packages)
# --------------------------------------------------------------------------------------------------
def require_binary(component: str, binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise StackError(
            f"{component}: `{binary}` not found; install it with `sudo apt-get install -y {package}`"
        )
    return path


def prometheus_config(settings: Settings) -> dict:
    """The Prometheus config of the local stack: scrape Triton, load pitcrew's rules, alert via Alertmanager."""
    interval = f"{settings.scrape_interval_s}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(settings.deploy_dir / "prometheus" / "rules" / "*.yml")],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"{settings.host}:{settings.alertmanager_port}"]}]}
            ]
        },
        "scrape_configs": [
            {
                "job_name": "triton",
                "static_configs": [{"targets": [f"{settings.host}:{settings.triton_metrics_port}"]}],
            },
            {
                # Pipeline metrics (runs, approvals, drift scores) written by pitcrew tasks as a textfile,
                # served by the Airflow plugin.
                "job_name": "pitcrew",
                "metrics_path": "/pitcrew/metrics",
                "static_configs": [{"targets": [f"{settings.host}:{settings.airflow_port}"]}],
            },
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"{settings.host}:{settings.prometheus_port}"]}],
            },
        ],
    }


def prometheus_component(settings: Settings) -> Component:
    home = settings.home_dir / "prometheus"

    def processes() -> list[Process]:
        binary = require_binary("prometheus", "prometheus", "prometheus")
        home.mkdir(parents=True, exist_ok=True)
        config = home / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(settings), sort_keys=False))
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={settings.host}:{settings.prometheus_port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=7d",
        ]
        return [Process("prometheus", argv, base_env(), home)]

    return Component(
        name="prometheus",
        url=settings.prometheus_url,
        ports=[settings.prometheus_port],
        processes=processes,
        health=lambda: _http_health(f"{settings.prometheus_url}/-/ready"),
    )


def alertmanager_config(settings: Settings, token: str) -> dict:
    """deploy/alertmanager/alertmanager.yml with the webhook URL and bearer token of this stack filled in."""
    source = settings.deploy_dir / "alertmanager" / "alertmanager.yml"
    config = yaml.safe_load(source.read_text())
    for receiver in config.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{settings.airflow_url}/pitcrew/alerts"
            hook.setdefault("http_config", {})["authorization"] = {"type": "Bearer", "credentials": token}
    return config


def alertmanager_component(settings: Settings) -> Component:
    home = settings.home_dir / "alertmanager"

    def processes() -> list[Process]:
        binary = require_binary("alertmanager", "prometheus-alertmanager", "prometheus-alertmanager")
        home.mkdir(parents=True, exist_ok=True)
        config = home / "alertmanager.yml"
        token = webhook_token(settings)
        config.write_text(yaml.safe_dump(alertmanager_config(settings, token), sort_keys=False))
        config.chmod(0o600)
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.path={home / 'data'}",
            f"--web.listen-address={settings.host}:{settings.alertmanager_port}",
            f"--cluster.listen-address={settings.host}:{settings.alertmanager_cluster_port}",
        ]
        return [Process("alertmanager", argv, base_env(), home)]

    return Component(
        name="alertmanager",
        url=settings.alertmanager_url,
        ports=[settings.alertmanager_port, settings.alertmanager_cluster_port],
        processes=processes,
        health=lambda: _http_health(f"{settings.alertmanager_url}/-/ready"),
    )


def webhook_token(settings: Settings) -> str:
    return settings.webhook_token.get_secret_value() or _secret(settings, "webhook_token")


def webhook_hmac_secret(settings: Settings) -> str:
    return settings.webhook_hmac_secret.get_secret_value() or _secret(settings, "webhook_hmac_secret")


# --------------------------------------------------------------------------------------------------
# Airflow 3
# --------------------------------------------------------------------------------------------------
AIRFLOW_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")


def airflow_env(settings: Settings) -> dict[str, str]:
    """Airflow configuration of the local stack, as ``AIRFLOW__SECTION__KEY`` variables."""
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
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,approver:op,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # Workers call the API server's execution API: without the real address every task fails.
            "AIRFLOW__API__BASE_URL": settings.airflow_url,
            "AIRFLOW__API__HOST": settings.host,
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": _secret(settings, "airflow_api_secret_key"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow_url}/execution/",
            # All four processes must sign and verify task tokens with the same key.
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(settings, "airflow_jwt_secret"),
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
    # Tasks and the webhook plugin read the same settings as the CLI that started the stack.
    env.update(settings.as_env())
    # Connections the Hooks use by default; production defines them in Airflow (see docker-compose.yml).
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
    path = settings.home_dir / "secrets" / "airflow_fernet_key"
    if not path.exists():
        from cryptography.fernet import Fernet

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(Fernet.generate_key().decode())
        path.chmod(0o600)
    return path.read_text().strip()


def airflow_password(settings: Settings, user: str = "admin") -> str:
    """A user's password as the simple auth manager generated it (written as JSON on first start).

    Users of the local stack: ``admin`` (Admin), ``approver`` (Op: may answer approvals assigned to it),
    ``viewer`` (Viewer).
    """
    path = settings.home_dir / "airflow" / "passwords.json"
    try:
        return json.loads(path.read_text())[user]
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise StackError(f"airflow: no password for {user!r} in {path}; is the stack up?") from exc


def airflow_admin_password(settings: Settings) -> str:
    return airflow_password(settings, "admin")


def airflow_component(settings: Settings) -> Component:
    home = settings.home_dir / "airflow"

    def prepare() -> None:
        home.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [str(venv_bin() / "airflow"), "db", "migrate"],
            env=airflow_env(settings),
            cwd=home,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise StackError(f"airflow: `airflow db migrate` failed:\n{tail}")
        # One Triton swap at a time across every DAG (concurrent load calls are not safe; DESIGN.md §5).
        pool = subprocess.run(
            [str(venv_bin() / "airflow"), "pools", "set", "pitcrew_triton_swaps", "1", "Serialises Triton swaps"],
            env=airflow_env(settings), cwd=home, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if pool.returncode != 0:
            raise StackError(f"airflow: could not create the pitcrew_triton_swaps pool: {pool.stderr[-500:]}")

    def processes() -> list[Process]:
        env = airflow_env(settings)
        return [
            Process(f"airflow-{sub}", [str(venv_bin() / "airflow"), sub], env, home)
            for sub in AIRFLOW_PROCESSES
        ]

    def health() -> Health:
        def all_healthy(response: httpx.Response) -> bool:
            body = response.json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            return all(body.get(p, {}).get("status") == "healthy" for p in parts)

        return _http_health(f"{settings.airflow_url}/api/v2/monitor/health", all_healthy)

    return Component(
        name="airflow",
        url=settings.airflow_url,
        ports=[settings.airflow_port],
        processes=processes,
        health=health,
        prepare=prepare,
    )


def all_components(settings: Settings) -> list[Component]:
    """In start order: what others depend on comes first (Prometheus alerts to Alertmanager, which posts to Airflow)."""
    return [
        mlflow_component(settings),
        triton_component(settings),
        airflow_component(settings),
        alertmanager_component(settings),
        prometheus_component(settings),
    ]
