"""docker-compose.yml and its images hold to pitcrew/stack/topology.py: this fails when the two drift apart.

The compose file is read as YAML (anchors and merge keys resolved by PyYAML), so these checks need no
docker-compose; tests/unit/test_compose.py validates it with docker-compose itself.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from pitcrew.models_file import load_models_file
from pitcrew.settings import REPO_ROOT
from pitcrew.stack import topology
from pitcrew.stack.secret_files import ALL_SECRET_FILES

DOCKER = REPO_ROOT / "deploy" / "docker"
SHARED_STATE = "/var/lib/pitcrew"

#: TensorRT inside each Triton image pitcrew may serve from. Source: NVIDIA's Triton release compatibility
#: matrix for release 25.01 (Triton 2.54.0), docs.nvidia.com/deeplearning/triton-inference-server/archives/
#: triton-inference-server-2540/user-guide/docs/introduction/compatibility.html, and the Frameworks Support
#: Matrix: TensorRT 10.8.0.43, CUDA 12.8.0.038, Python 3.12. Add the row from that matrix when moving Triton.
TRITON_TENSORRT = {"nvcr.io/nvidia/tritonserver:25.01-py3": "10.8.0.43"}


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]


def _airflow_services(services: dict) -> list[str]:
    """Every service running pitcrew's Airflow image with Airflow's environment."""
    return [name for name, s in services.items() if "AIRFLOW__CORE__EXECUTOR" in (s.get("environment") or {})]


def _dockerfile(name: str) -> tuple[dict[str, str], list[str], str]:
    """(ARG defaults, FROM images with ARGs substituted, text) of deploy/docker/Dockerfile.<name>."""
    text = (DOCKER / f"Dockerfile.{name}").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    froms = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f) for f in re.findall(r"^FROM (\S+)", text, re.M)
    ]
    return args, froms, text


def _python_of(image: str) -> str:
    match = re.search(r"-python(3\.\d+)$", image)
    assert match, f"{image}: the tag names no Python (apache/airflow:<version>-python3.X)"
    return match.group(1)


def _pins(text: str) -> dict[str, str]:
    return {
        n.lower(): v for n, v in re.findall(r"(?m)(?:^|\s)([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([\w.+]+)", text)
    }


# -- services, workers, init ---------------------------------------------------------------------------
def test_every_topology_service_is_a_compose_service(services: dict) -> None:
    assert set(topology.SERVICES) | {topology.INIT_SERVICE} <= set(services)


@pytest.mark.parametrize("worker", topology.WORKERS, ids=lambda w: w.service)
def test_workers_consume_exactly_their_queue_with_their_concurrency(services: dict, worker) -> None:
    command = services[worker.service]["command"]
    assert command[:3] == ["airflow", "celery", "worker"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options == {"--queues": worker.queue, "--concurrency": str(worker.concurrency)}
    env = services[worker.service]["environment"]
    assert env["PITCREW_WORKER_NAME"] == worker.worker_name
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "pitcrew.stack.worker_identity.hostname"
    # The API server fetches task logs from the hostname the worker recorded: it must resolve in compose.
    aliases = services[worker.service].get("networks", {}).get("default", {}).get("aliases", [])
    assert worker.worker_name in {worker.service, *aliases}


def test_long_running_airflow_processes(services: dict) -> None:
    for sub, name in topology.AIRFLOW_SERVICES.items():
        assert services[name]["command"] == ["airflow", sub]


def test_the_gpu_tasks_go_to_the_gpu_worker() -> None:
    from operators.model_operators import GPU_QUEUE, CompileModelOperator, FineTuneOperator

    assert topology.worker(GPU_QUEUE).service == "airflow-worker-gpu"
    assert FineTuneOperator(task_id="f", model="textclf", base_model="x").queue == GPU_QUEUE
    assert CompileModelOperator(task_id="c", model="textclf", checkpoint="x").queue == GPU_QUEUE


def test_init_runs_the_init_command_through_airflows_entrypoint(services: dict) -> None:
    init = services[topology.INIT_SERVICE]
    assert tuple(init["command"]) == topology.INIT_COMMAND
    # /entrypoint would run `airflow pitcrew airflow-init`; its bash branch runs the command as given.
    entrypoint = init["entrypoint"]
    assert entrypoint[:5] == ["/usr/bin/dumb-init", "--", "/entrypoint", "bash", "-c"]
    assert shlex.split(entrypoint[5]) == ["exec", "$$0", "$$@"]


# -- environment -----------------------------------------------------------------------------------------
def test_every_airflow_service_sets_the_shared_environment(services: dict) -> None:
    names = _airflow_services(services)
    assert set(names) >= {topology.INIT_SERVICE, *topology.AIRFLOW_SERVICES.values()} | {
        w.service for w in topology.WORKERS
    }
    for name in names:
        env = services[name]["environment"]
        missing = [n for n in topology.AIRFLOW_ENV_NAMES if n not in env and f"{n}_CMD" not in env]
        assert not missing, f"{name} lacks {missing}"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__DEFAULT_QUEUE"] == topology.DEFAULT_QUEUE
        assert env["PITCREW_SECRETS_DIR"] == "/run/secrets"
        assert f"pitcrew-state:{SHARED_STATE}" in services[name]["volumes"]


def test_task_limits_and_celery_pool_are_the_profiles(services: dict) -> None:
    for name in _airflow_services(services):
        env = services[name]["environment"]
        assert {k: str(env[k]) for k in topology.scheduling_env()} == topology.scheduling_env(), name


def test_connections_are_defined(services: dict) -> None:
    env = services["airflow-worker"]["environment"]
    # pitcrew_webhook (from the secret files) and pitcrew_airflow_api (as the simple auth manager's service user
    # `pitcrew`, whose generated password it reads) are created by `pitcrew airflow-init`; the rest come from here.
    assert "pitcrew:viewer" in services["airflow-worker"]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    for conn_id in set(topology.CONNECTION_IDS) - {"pitcrew_webhook", "pitcrew_airflow_api"}:
        assert f"AIRFLOW_CONN_{conn_id.upper()}" in env, conn_id
    triton = json.loads(env["AIRFLOW_CONN_TRITON_DEFAULT"])
    assert triton["port"] == 8000 and triton["extra"]["repository"] == "/models"


def test_triton_connection_names_the_tensorrt_of_the_triton_image(services: dict) -> None:
    """Plans are refused unless built by the serving Triton's TensorRT: the connection must name that one."""
    extra = json.loads(services["airflow-worker"]["environment"]["AIRFLOW_CONN_TRITON_DEFAULT"])["extra"]
    _args, froms, _text = _dockerfile("triton")
    assert extra["tensorrt_version"] == TRITON_TENSORRT[froms[0]]
    assert extra["core_standin"] is False and extra["gpu"] is True


def test_shared_dirs_cover_the_volumes_workers_and_triton_mount(services: dict) -> None:
    shared = json.loads(services["airflow-worker"]["environment"]["PITCREW_SHARED_DIRS"])
    assert shared == [SHARED_STATE, "/models"]
    for name in ("airflow-worker", "airflow-worker-gpu", "triton"):
        targets = {v.split(":")[1] for v in services[name]["volumes"]}
        assert set(shared) <= targets, name


# -- ports, ordering, health -------------------------------------------------------------------------------
def test_only_the_published_services_have_ports_on_loopback(services: dict) -> None:
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == set(topology.PUBLISHED_SERVICES)
    for name in published:
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), name


def test_every_airflow_service_waits_for_init(services: dict) -> None:
    for name in _airflow_services(services):
        if name == topology.INIT_SERVICE:
            continue
        condition = services[name]["depends_on"][topology.INIT_SERVICE]["condition"]
        assert condition == "service_completed_successfully", name


def test_what_is_waited_on_has_a_healthcheck(services: dict) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert isinstance(spec, dict), f"{name}: depends_on {target} without a condition"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target}, which has no healthcheck"
                )


# -- secrets ---------------------------------------------------------------------------------------------
def test_secrets_are_declared_files_and_never_interpolated(services: dict) -> None:
    declared = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["secrets"]
    assert set(topology.SECRET_NAMES) <= set(declared)
    assert set(declared) == set(ALL_SECRET_FILES)
    for name, spec in declared.items():
        assert spec["file"].endswith(f"/{name}"), name
    for name, service in services.items():
        for key in ("command", "entrypoint", "healthcheck"):
            text = json.dumps(service.get(key, ""))
            assert not re.search(r"(?i)(PASSWORD|SECRET|TOKEN|KEY)[A-Z_]*\}", text), f"{name}.{key}"


# -- images ------------------------------------------------------------------------------------------------
def test_gpu_worker_python_is_pitcrews_python() -> None:
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    _, (airflow_base,), _ = _dockerfile("airflow")
    _, (gpu_base,), _ = _dockerfile("gpu-worker")
    assert _python_of(gpu_base) == _python_of(airflow_base)
    assert f"{_python_of(gpu_base)}.0" in SpecifierSet(requires)
    assert gpu_base == airflow_base


def test_gpu_worker_tensorrt_is_the_tritons(services: dict) -> None:
    gpu_args, _, gpu_text = _dockerfile("gpu-worker")
    _, (triton_base,), _ = _dockerfile("triton")
    compose_base = services["triton"]["build"]["args"]["TRITON_BASE_IMAGE"]
    assert compose_base == triton_base == gpu_args["TRITON_BASE_IMAGE"]
    assert services["airflow-worker-gpu"]["build"]["args"]["TRITON_BASE_IMAGE"] == compose_base
    assert compose_base in TRITON_TENSORRT, (
        f"add {compose_base}'s TensorRT version (NVIDIA's matrix) to the table"
    )
    assert gpu_args["TENSORRT_VERSION"] == TRITON_TENSORRT[compose_base]
    for wheel in ("tensorrt-cu12", "tensorrt-cu12-libs", "tensorrt-cu12-bindings"):
        assert f'"{wheel}==${{TENSORRT_VERSION}}"' in gpu_text, wheel


def test_gpu_worker_installs_the_gpu_requirements_and_cuda_torch() -> None:
    args, _, text = _dockerfile("gpu-worker")
    assert "requirements-gpu.txt" in re.search(r"(?m)^COPY .*$", text).group(0)
    assert "-r /opt/pitcrew/requirements-gpu.txt" in text
    assert args["TORCH_VERSION"] == _pins((REPO_ROOT / "requirements.txt").read_text())["torch"]
    assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")


def test_every_airflow_image_installs_requirements() -> None:
    requirements = _pins((REPO_ROOT / "requirements.txt").read_text())
    assert {"apache-airflow-providers-celery", "psycopg2-binary"} <= set(requirements)
    for name in ("airflow", "gpu-worker"):
        _, _, text = _dockerfile(name)
        assert re.search(r"-r /(opt/pitcrew|tmp)/requirements[\w-]*\.txt", text), name


def test_triton_image_has_what_the_python_backend_imports() -> None:
    _, _, text = _dockerfile("triton")
    requirements = _pins((REPO_ROOT / "requirements.txt").read_text())
    pins = _pins(text)
    assert {"tokenizers", "onnxruntime", "pyarrow", "pandas", "numpy"} <= set(pins)
    assert {n: v for n, v in pins.items() if requirements.get(n) != v} == {}, (
        "pins differ from requirements.txt"
    )
    tree = ast.parse((REPO_ROOT / "model_repository" / "textclf" / "model.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    first_party = {p for p in imported if (REPO_ROOT / p / "__init__.py").exists()}
    assert first_party, "model.py imports a first-party package (monitoring)"
    for package in first_party:
        assert re.search(rf"(?m)^COPY {package} /opt/pitcrew/{package}$", text), package
    assert "PYTHONPATH=/opt/pitcrew" in text


# -- the models file ---------------------------------------------------------------------------------------
def test_compose_models_file_lies_on_the_shared_state(services: dict) -> None:
    path = REPO_ROOT / "deploy" / "models.compose.yaml"
    entries = load_models_file(path).models
    assert [e.name for e in entries] == [e.name for e in load_models_file(REPO_ROOT / "models.yaml").models]
    for entry in entries:
        for field in ("train_data", "inference_log", "feedback", "golden_data"):
            value = getattr(entry, field)
            assert value is None or Path(value).is_relative_to(SHARED_STATE), f"{entry.name}.{field}: {value}"
    in_image = services["airflow-worker"]["environment"]["PITCREW_MODELS_FILE"]
    assert in_image == "/opt/pitcrew/deploy/models.compose.yaml"
    for name in ("airflow", "gpu-worker"):
        _, _, text = _dockerfile(name)
        assert f"COPY --chown=airflow:0 deploy/models.compose.yaml {in_image}" in text, name
