"""What each server of the local stack is: how to prepare it, the command that runs it, and its health check.

The environment each server needs (Triton's libpython and stub, Airflow's shared secrets and base URL)
is built here and in :mod:`pitcrew.stack.airflow_component`, so that a user never sets it by hand.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import yaml

# The stack's public surface: the CLI, the demo, the plugin and the tests import these names from here.
from pitcrew.settings import Settings
from pitcrew.stack.airflow_component import (
    AIRFLOW_PROCESSES,
    airflow_admin_password,
    airflow_component,
    airflow_env,
    airflow_password,
)  # fmt: skip
from pitcrew.stack.base import (
    Component,
    Health,
    Process,
    StackError,
    base_env,
    grafana_token,
    http_health,
    stack_secret,
    venv_bin,
    webhook_hmac_secret,
    webhook_token,
    write_private,
)  # fmt: skip

__all__ = [
    "AIRFLOW_PROCESSES", "Component", "Health", "Process", "StackError", "airflow_admin_password",
    "airflow_component", "airflow_env", "airflow_password", "all_components", "alertmanager_component",
    "base_env", "grafana_token", "mlflow_component", "pager_receivers", "pager_secret_files",
    "prometheus_component", "stack_secret", "triton_component", "venv_bin", "webhook_hmac_secret", "webhook_token",
]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------
def mlflow_component(
    settings: Settings, backend_store_uri: str | None = None, extra_env: Callable[[], dict[str, str]] | None = None
) -> Component:
    """MLflow with artifacts proxied by the server; SQLite unless ``backend_store_uri`` (PostgreSQL) is given."""
    home = settings.home_dir / "mlflow"

    def processes() -> list[Process]:
        home.mkdir(parents=True, exist_ok=True)
        argv = [
            str(venv_bin() / "mlflow"), "server",
            "--host", settings.host, "--port", str(settings.mlflow_port),
            "--backend-store-uri", backend_store_uri or f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination", str(home / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        return [Process("mlflow", argv, {**base_env(), **(extra_env() if extra_env else {})}, home)]

    return Component(
        name="mlflow",
        url=settings.mlflow_url,
        ports=[settings.mlflow_port],
        processes=processes,
        health=lambda: http_health(f"{settings.mlflow_url}/health"),
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
    # makes the next load call load that version again (docs/design.md, "Hot-swap").
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
        # On SIGTERM Triton waits this long for in-flight requests, and also for clients' idle keep-alive
        # connections, which hold it for the whole time; a CPU model answers within it.
        "--exit-timeout-secs=5",
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
        # Never a staging model (docs/design.md, "Hot-swap"): one left by a swap that Triton's restart
        # interrupted is being removed by that swap, and a folder deleted while Triton loads it at start-up
        # hangs the start-up for good; nobody calls a staging model, and the next swap removes it anyway.
        ready = sorted(
            p.name
            for p in settings.repository_dir.iterdir()
            if (p / "config.pbtxt").exists() and any(c.is_dir() and c.name.isdigit() for c in p.iterdir())
            and not p.name.endswith("__staging")  # pitcrew.serving.model_config.staging_model_name
        )
        argv = triton_argv(settings, settings.repository_dir, backends, ready)
        return [Process("triton", argv, triton_env(), home)]

    def health() -> Health:
        ready = http_health(f"http://{settings.triton_http_url}/v2/health/ready")
        if not ready.ok:
            return ready
        metrics = http_health(settings.triton_metrics_url, lambda r: "nv_" in r.text)
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
        health=lambda: http_health(f"{settings.prometheus_url}/-/ready"),
    )


#: Where the pager receivers (deploy/alertmanager/pager/*.yml) read their secret files, as compose mounts them.
PAGER_SECRETS_MOUNT = "/run/secrets/pager/"
#: The receivers a pager file defines, replacing the empty ones of deploy/alertmanager/alertmanager.yml.
PAGER_RECEIVERS = ("pager", "people")


def pager_receivers(settings: Settings) -> list[dict]:
    """The ``pager`` and ``people`` receivers of ``deploy/alertmanager/pager/<settings.pager>.yml``, their
    secret files (``*_file`` under /run/secrets/pager/) pointed at ``<secrets>/pager/``."""
    source = settings.deploy_dir / "alertmanager" / "pager" / f"{settings.pager}.yml"
    receivers = yaml.safe_load(source.read_text())
    if sorted(r["name"] for r in receivers) != sorted(PAGER_RECEIVERS):
        raise StackError(f"alertmanager: {source} must define the receivers {', '.join(PAGER_RECEIVERS)} only")

    def local(node: object) -> object:
        if isinstance(node, dict):
            return {
                key: str(settings.secrets_path / "pager" / value.removeprefix(PAGER_SECRETS_MOUNT))
                if key.endswith("_file") and isinstance(value, str) and value.startswith(PAGER_SECRETS_MOUNT)
                else local(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [local(item) for item in node]
        return node

    return [local(receiver) for receiver in receivers]


def pager_secret_files(config: dict) -> list[Path]:
    """The secret files (``*_file`` values) the ``pager`` and ``people`` receivers of ``config`` read."""
    found: list[Path] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_file") and isinstance(value, str):
                    found.append(Path(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk([r for r in config.get("receivers", []) if r["name"] in PAGER_RECEIVERS])
    return sorted(set(found))


def alertmanager_config(settings: Settings, token: str) -> dict:
    """deploy/alertmanager/alertmanager.yml with this stack's webhook URL and bearer token filled in, and the
    ``pager``/``people`` receivers of ``PITCREW_PAGER`` (:func:`pager_receivers`)."""
    source = settings.deploy_dir / "alertmanager" / "alertmanager.yml"
    config = yaml.safe_load(source.read_text())
    for receiver in config.get("receivers", []):
        if receiver["name"] != "pitcrew":
            continue
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{settings.airflow_url}/pitcrew/alerts"
            hook.setdefault("http_config", {})["authorization"] = {"type": "Bearer", "credentials": token}
    others = [r for r in config.get("receivers", []) if r["name"] not in PAGER_RECEIVERS]
    config["receivers"] = others + pager_receivers(settings)
    return config


def alertmanager_component(settings: Settings) -> Component:
    home = settings.home_dir / "alertmanager"

    def processes() -> list[Process]:
        binary = require_binary("alertmanager", "prometheus-alertmanager", "prometheus-alertmanager")
        home.mkdir(parents=True, exist_ok=True)
        config = home / "alertmanager.yml"
        token = webhook_token(settings)
        rendered = alertmanager_config(settings, token)
        # Alertmanager reads them only when it notifies: a missing one would surface at the first page.
        problems = [
            f"{path} is missing (PITCREW_PAGER={settings.pager})" if not path.is_file()
            else f"{path} is readable by group or others (chmod 600 it)"
            for path in pager_secret_files(rendered)
            if not path.is_file() or path.stat().st_mode & 0o077
        ]  # fmt: skip
        if problems:
            raise StackError("alertmanager: pager secret file " + "; ".join(problems))
        write_private(config, yaml.safe_dump(rendered, sort_keys=False))
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
        health=lambda: http_health(f"{settings.alertmanager_url}/-/ready"),
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
