"""The shape of a distributed pitcrew deployment, declared once.

The distributed profile of the local stack (:mod:`pitcrew.stack.distributed`) and ``docker-compose.yml``
are two renderings of this shape; ``tests/unit/test_compose_topology.py`` fails when they drift apart.
Nothing here starts anything: it is the contract both sides read.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Airflow's long-running processes besides the workers, by ``airflow <sub-command>``.
AIRFLOW_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass(frozen=True)
class Worker:
    """One Celery worker: the queue it consumes, its slots, and its name in compose and in the profile."""

    queue: str
    concurrency: int
    service: str

    @property
    def component(self) -> str:
        """The local stack's component (and pid file) name."""
        return f"worker-{self.queue}"

    @property
    def worker_name(self) -> str:
        """What Airflow records as the task instance's ``hostname`` when this worker runs a task.

        The compose service name, so that in compose the API server reaches the worker's log server by
        it; the local profile reads task logs from the shared log folder instead.
        """
        return self.service


#: Fine-tune and compile default to queue ``gpu`` (operators/model_operators.py); everything else runs on
#: ``default``. One GPU task at a time per GPU worker: two fine-tunes on one card run out of memory.
WORKERS = (
    # 64 slots: an alert burst (50 runs in 10 s) starts every run's task at once instead of in waves behind
    # slow 2-core task turnover (with 16 slots: p95 to the first task running 25-52 s; with 64 plus the
    # preloaded Celery pool, pitcrew.stack.celery_config: 9-11 s). Slots are idle pool processes (~tens of MB).
    Worker(queue="default", concurrency=64, service="airflow-worker"),
    Worker(queue="gpu", concurrency=1, service="airflow-worker-gpu"),
)
QUEUES = tuple(w.queue for w in WORKERS)
DEFAULT_QUEUE = "default"

def scheduling_env() -> dict[str, str]:
    """Airflow's task limits sized to the workers' slots, and the preloaded Celery pool (profile and compose).

    Airflow's default ``max_active_tasks_per_dag`` (16) caps one DAG's running tasks across all its runs:
    an alert burst starts one maintenance run per alert, and with the cap the 17th run's task waited for a
    slot however many worker slots were free (benchmarks/alert_latency.py: scheduled -> queued 30-50 s).
    """
    slots = str(sum(w.concurrency for w in WORKERS))
    return {
        "AIRFLOW__CORE__PARALLELISM": slots,
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": slots,
        # Airflow's Celery config plus the task-execution modules imported once, before the pool forks.
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "pitcrew.stack.celery_config.CELERY_CONFIG",
    }


#: Compose service of each Airflow process.
AIRFLOW_SERVICES = {sub: f"airflow-{sub}" for sub in AIRFLOW_PROCESSES}

#: Every long-running service of the deployment (compose adds Grafana and MinIO, which the local profile
#: does not run: dashboards are optional and artifacts are proxied to a local folder instead of S3).
SERVICES = (
    "postgres",
    "redis",
    *AIRFLOW_SERVICES.values(),
    *(w.service for w in WORKERS),
    "mlflow",
    "triton",
    "prometheus",
    "alertmanager",
)
#: The one-shot service every Airflow service waits for, and the command it runs.
INIT_SERVICE = "airflow-init"
INIT_COMMAND = ("pitcrew", "airflow-init")
#: The only services a user must reach from outside the deployment's network.
PUBLISHED_SERVICES = ("airflow-api-server", "grafana")

#: Pools ``pitcrew airflow-init`` creates: name -> (slots, description).
POOLS = {"pitcrew_triton_swaps": (1, "One Triton swap at a time across every DAG (docs/design.md, Hot-swap)")}

#: Connections every task finds: the Hooks' defaults plus the alert webhook the watch DAG posts to.
CONNECTION_IDS = (
    "mlflow_default", "triton_default", "prometheus_default", "pitcrew_webhook", "pitcrew_airflow_api",
)  # fmt: skip

#: Environment every Airflow process and worker of the distributed deployment sets (compose may set a
#: sensitive one as ``<NAME>_CMD`` reading a secret file instead: the name is the same setting).
AIRFLOW_ENV_NAMES = (
    "AIRFLOW__CORE__EXECUTOR",
    *scheduling_env(),
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "AIRFLOW__API__BASE_URL",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__DEFAULT_QUEUE",
    "AIRFLOW_CONN_MLFLOW_DEFAULT",
    "AIRFLOW_CONN_TRITON_DEFAULT",
    "AIRFLOW_CONN_PROMETHEUS_DEFAULT",
    "PITCREW_HOME",
    "PITCREW_MODEL_REPOSITORY",
    "PITCREW_MODELS_FILE",
    "PITCREW_SECRETS_DIR",
    "PITCREW_SHARED_DIRS",
    "PITCREW_AIRFLOW_INTERNAL_URL",
)

#: Secret files ``pitcrew secrets`` writes (mode 0600) into the secrets folder; compose mounts the same
#: names as Docker secrets. Nothing secret is passed on a command line or pasted into compose.
SECRET_NAMES = (
    "airflow_fernet_key",
    "airflow_api_secret_key",
    "airflow_jwt_secret",
    "postgres_password",
    "redis_password",
    "webhook_token",
    "grafana_token",
    "webhook_hmac_secret",
)


def worker(queue: str) -> Worker:
    for candidate in WORKERS:
        if candidate.queue == queue:
            return candidate
    raise KeyError(f"no worker consumes queue {queue!r}; queues: {', '.join(QUEUES)}")
