"""docker-compose.yml is validated offline by Debian's docker-compose (no Docker engine needed).

Every run does the documented secrets step first (`pitcrew secrets` into a temporary folder, pointed to by
PITCREW_COMPOSE_SECRETS_DIR), then `docker-compose config`, exactly as the README tells an operator to.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pitcrew.settings import REPO_ROOT
from pitcrew.stack.secret_files import ALL_SECRET_FILES

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / "deploy" / ".env.example"


def _pitcrew(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pitcrew", *args], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )


def _compose(secrets_dir: Path, *args: str, env_file: Path) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed; the README's test command installs it (apt-get)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITCREW_")}
    env["PITCREW_COMPOSE_SECRETS_DIR"] = str(secrets_dir)
    # --env-file: a developer's own .env in the checkout must not change what is validated.
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "--project-directory", str(REPO_ROOT),
         "-f", str(COMPOSE_FILE), *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compose") / "secrets"
    result = _pitcrew("secrets", "--dir", str(folder))
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def compose(secrets_dir: Path) -> dict:
    result = _compose(secrets_dir, "config", env_file=ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_config_quiet_passes_after_the_secrets_step(secrets_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    for env_file in (ENV_EXAMPLE, empty):  # the example's knobs are optional
        result = _compose(secrets_dir, "config", "-q", env_file=env_file)
        assert result.returncode == 0, result.stderr


def test_compose_mounts_exactly_the_files_pitcrew_secrets_writes(compose: dict, secrets_dir: Path) -> None:
    declared = {name: Path(spec["file"]) for name, spec in compose["secrets"].items()}
    assert set(declared) == set(ALL_SECRET_FILES)
    assert all(path == secrets_dir / name for name, path in declared.items())


def test_a_missing_secret_file_is_named(secrets_dir: Path, tmp_path: Path) -> None:
    # docker-compose never opens secret files (`config` passes without them; `up` fails later, in the
    # engine), so the documented check is `pitcrew secrets --check`, over the same list compose mounts.
    partial = tmp_path / "secrets"
    shutil.copytree(secrets_dir, partial)
    (partial / "redis_password").unlink()
    result = _pitcrew("secrets", "--check", "--dir", str(partial))
    assert result.returncode == 1
    assert f"missing secret file {partial / 'redis_password'}" in result.stderr
    assert _pitcrew("secrets", "--check", "--dir", str(secrets_dir)).returncode == 0


def _secret_like(name: str) -> bool:
    """A variable that would hold a secret (a folder *of* secrets does not)."""
    return bool(re.search(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY", name)) and not name.endswith("_DIR")


def test_env_example_holds_no_secret() -> None:
    keys = [
        line.partition("=")[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if re.match(r"^[A-Z_]+=", line)
    ]
    assert keys, "deploy/.env.example lists the compose knobs"
    assert not [k for k in keys if _secret_like(k)]


def test_no_secret_is_interpolated_into_compose() -> None:
    # Secrets reach services only as files: never as ${...} from the environment or .env.
    interpolated = re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text())
    assert interpolated, "the pattern finds compose's own variables"
    assert not [name for name in interpolated if _secret_like(name)]


def test_production_services(compose: dict) -> None:
    services = compose["services"]
    for name in (
        "postgres", "redis", "airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
        "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "mlflow", "minio", "triton",
        "prometheus", "alertmanager", "grafana",
    ):  # fmt: skip
        assert name in services, name
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_gpu_reservations(compose: dict) -> None:
    for name in ("airflow-worker-gpu", "triton"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_triton_explicit_and_shares_repository_and_state(compose: dict) -> None:
    services = compose["services"]
    assert "--model-control-mode=explicit" in services["triton"]["command"]

    def mounts(name: str) -> set[str]:
        # docker-compose 1.29 prints short syntax: "volume:/path:mode".
        return {":".join(v.split(":")[:2]) for v in services[name]["volumes"]}

    for name in ("triton", "airflow-worker", "airflow-worker-gpu"):
        assert {"model-repository:/models", "pitcrew-state:/var/lib/pitcrew"} <= mounts(name), name


def test_triton_connection_is_the_http_port(compose: dict) -> None:
    conn = yaml.safe_load(compose["services"]["airflow-worker"]["environment"]["AIRFLOW_CONN_TRITON_DEFAULT"])
    assert (conn["conn_type"], conn["host"], conn["port"]) == ("triton", "triton", 8000)
    assert conn["extra"]["repository"] == "/models"


def test_mlflow_accepts_the_host_name_workers_use(compose: dict) -> None:
    mlflow = compose["services"]["mlflow"]
    (hosts,) = [a.split("=", 1)[1] for a in mlflow["command"] if a.startswith("--allowed-hosts=")]
    assert {"mlflow", "mlflow:5000"} <= set(hosts.split(","))
    uri = compose["services"]["airflow-worker"]["environment"]["AIRFLOW_CONN_MLFLOW_DEFAULT"]
    assert uri == "http://mlflow:5000"


def test_grafana_gets_what_its_provisioning_reads(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    provisioning = REPO_ROOT / "deploy" / "grafana" / "provisioning"
    wanted = {
        m for f in provisioning.rglob("*.yml") for m in re.findall(r"\$\{(PITCREW_[A-Z_]+)\}", f.read_text())
    }
    # The entrypoint exports the secret ones from their files before it starts Grafana.
    exported = re.findall(r"(\w+)=\"\$\$\(cat /run/secrets/\w+\)\"", " ".join(grafana["entrypoint"]))
    provided = set(grafana["environment"]) | set(exported)
    assert wanted and wanted <= provided


def test_grafana_and_alertmanager_hold_different_webhook_tokens(compose: dict) -> None:
    # One leaked token opens one sender's path only (pitcrew.alerts.auth): Grafana never sees Alertmanager's.
    services = compose["services"]
    grafana = services["grafana"]
    secrets = {s if isinstance(s, str) else s["source"] for s in grafana["secrets"]}
    assert "grafana_token" in secrets and "webhook_token" not in secrets
    assert 'PITCREW_GRAFANA_TOKEN="$$(cat /run/secrets/grafana_token)"' in " ".join(grafana["entrypoint"])
    points = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/alerting/contact_points.yml").read_text())
    (webhook,) = [r for p in points["contactPoints"] for r in p["receivers"] if r["type"] == "webhook"]
    assert webhook["settings"]["authorization_credentials"] == "${PITCREW_GRAFANA_TOKEN}"
    assert webhook["settings"]["hmacConfig"]["timestampHeader"]  # the webhook refuses untimestamped signatures
    alertmanager = {s if isinstance(s, str) else s["source"] for s in services["alertmanager"]["secrets"]}
    assert alertmanager == {"webhook_token"}
    for name in ("airflow-init", "airflow-api-server"):  # airflow-init writes it, the plugin reads it
        mounted = {s if isinstance(s, str) else s["source"] for s in services[name]["secrets"]}
        assert {"webhook_token", "grafana_token", "webhook_hmac_secret"} <= mounted, name


def test_mounted_configs_are_valid() -> None:
    promtool = subprocess.run(
        [
            "promtool",
            "check",
            "config",
            "--syntax-only",
            str(REPO_ROOT / "deploy/prometheus/prometheus.compose.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


def test_alertmanager_config_is_completed_by_the_chosen_pager(compose: dict, tmp_path: Path) -> None:
    # The service appends deploy/alertmanager/pager/$PITCREW_PAGER.yml (default none) at start.
    alertmanager = compose["services"]["alertmanager"]
    script = " ".join(alertmanager["entrypoint"])
    assert "/etc/alertmanager/pager/none.yml" in script  # the .env example's PITCREW_PAGER
    mounts = {v.split(":")[1]: v.split(":")[0] for v in alertmanager["volumes"]}
    assert Path(mounts["/etc/alertmanager/pager"]) == REPO_ROOT / "deploy" / "alertmanager" / "pager"
    assert mounts["/run/secrets/pager"].endswith("/pager")  # the secret files' folder, read-only
    assert [v for v in alertmanager["volumes"] if ":/run/secrets/pager:" in v][0].endswith(":ro")
    base = (REPO_ROOT / "deploy/alertmanager/alertmanager.compose.yml").read_text()
    pagers = sorted((REPO_ROOT / "deploy/alertmanager/pager").glob("*.yml"))
    assert {p.stem for p in pagers} == {"none", "pagerduty", "slack", "email"}
    for pager in pagers:
        config = tmp_path / f"{pager.stem}.yml"
        config.write_text(base + pager.read_text())
        amtool = subprocess.run(["amtool", "check-config", str(config)], capture_output=True, text=True)
        assert amtool.returncode == 0, pager.name + amtool.stdout + amtool.stderr


def test_env_example_pager_is_a_pager_file() -> None:
    (value,) = re.findall(r"^PITCREW_PAGER=(\w+)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert (REPO_ROOT / "deploy" / "alertmanager" / "pager" / f"{value}.yml").is_file()
