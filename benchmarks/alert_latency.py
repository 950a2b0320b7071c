"""Alert webhook latency on the local stack: POST → DAG run created, and → its first task running.

Starts a private Airflow (free ports, temp home) whose DAGs folder holds the stand-in
``pitcrew_maintenance_textclf`` and whose plugins folder is the repo's ``plugins/``; posts N distinct
Alertmanager-format alerts at ``--rate`` per second to ``/pitcrew/alerts``; reads each run's first task
start time through Airflow's REST API. Prints one JSON line.

``--profile embedded`` is Airflow on SQLite with the LocalExecutor; ``--profile distributed`` is the
production topology (PostgreSQL, Redis, CeleryExecutor with the ``default`` and ``gpu`` workers).

    .venv/bin/python benchmarks/alert_latency.py --profile distributed --rate 5 --alerts 50

Targets: p95 ≤ 250 ms to a created run (the response names it); p95 ≤ 15 s to the first task running.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

from pitcrew.airflow_api import AirflowApi
from pitcrew.alerts.client import alert_entry, alertmanager_body, auth_headers
from pitcrew.demo import write_fast_deploy
from pitcrew.settings import REPO_ROOT
from pitcrew.stack.components import airflow_admin_password, webhook_token
from pitcrew.stack.runner import PROFILES

sys.path.insert(0, str(REPO_ROOT))  # tests/: free ports, a private stack home, stand-in DAGs
from tests.alert_stack import write_dags_folder, write_models_file  # noqa: E402
from tests.stack_fixtures import make_settings, running_stack  # noqa: E402

DAG_ID = "pitcrew_maintenance_textclf"
#: Airflow and what it needs to run tasks, per profile (no Triton, MLflow or Prometheus: the stand-in
#: DAG's one task calls none of them).
ONLY = {
    "embedded": ("airflow",),
    "distributed": ("postgres", "redis", "airflow", "worker-default", "worker-gpu"),
}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: the reported value was observed)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=60, help="distinct firing alerts to post (>= 50)")
    parser.add_argument("--rate", type=float, default=1.0, help="alerts posted per second (a burst: > 1)")
    parser.add_argument("--profile", choices=PROFILES, default="embedded", help="which local stack to measure")
    parser.add_argument("--first-task-timeout-s", type=float, default=180.0, help="give up waiting after this")
    args = parser.parse_args(argv)
    if args.alerts < 1 or args.rate <= 0:
        parser.error("--alerts must be >= 1 and --rate > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pitcrew-alert-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)  # the distributed profile's PostgreSQL runs as `postgres` and must enter it
        settings = make_settings(
            root / "home",
            postgres_data=root / "postgres",
            shared_dirs=[root],  # the models file's data paths resolve under the temporary folder
            dags_folder=write_dags_folder(root / "dags"),
            plugins_folder=REPO_ROOT / "plugins",
            deploy_dir=write_fast_deploy(root / "deploy"),
            models_file=write_models_file(root / "models.yaml", max_auto_runs_per_day=args.alerts + 10),
        )
        with running_stack(settings, only=ONLY[args.profile], profile=args.profile):
            api = AirflowApi(settings.airflow_url, "admin", airflow_admin_password(settings))
            api.wait_for_dag(DAG_ID)
            token = webhook_token(settings)
            url = f"{settings.airflow_url}/pitcrew/alerts"
            posted: dict[str, float] = {}
            create_ms: list[float] = []
            with httpx.Client(timeout=30) as client:
                # One warm-up post (first request builds the service, imports Airflow's trigger path).
                warm = alertmanager_body([alert_entry({"alertname": "BenchWarmUp", "model": "none"})])
                client.post(url, content=warm, headers=auth_headers(warm, token))
                started = time.perf_counter()
                for i in range(args.alerts):
                    # A fixed schedule (alert i at i / rate), not a pause after each answer: a slow answer
                    # must not slow the burst down.
                    time.sleep(max(0.0, started + i / args.rate - time.perf_counter()))
                    body = alertmanager_body(
                        [alert_entry({"alertname": "TritonInferenceFailures", "model": "textclf", "bench": str(i)})]
                    )
                    headers = auth_headers(body, token)
                    sent_wall, sent = time.time(), time.perf_counter()
                    response = client.post(url, content=body, headers=headers)
                    create_ms.append((time.perf_counter() - sent) * 1000)
                    if response.status_code != 200 or len(response.json()["run_ids"]) != 1:
                        print(f"alert {i}: HTTP {response.status_code} {response.text[:200]}", file=sys.stderr)
                        return 1
                    posted[response.json()["run_ids"][0]] = sent_wall
                achieved_rate = args.alerts / max(time.perf_counter() - started, 1e-9)
            first_task_s: dict[str, float] = {}
            deadline = time.monotonic() + args.first_task_timeout_s
            while len(first_task_s) < len(posted) and time.monotonic() < deadline:
                for run_id, sent_wall in posted.items():
                    if run_id in first_task_s:
                        continue
                    instances = api.tasks.get_task_instances(DAG_ID, run_id, limit=100).task_instances
                    starts = [ti.start_date for ti in instances if ti.start_date is not None]
                    if starts:
                        first = min(s.timestamp() for s in starts)
                        first_task_s[run_id] = first - sent_wall
                time.sleep(1.0)
    if len(first_task_s) < len(posted):
        print(f"{len(posted) - len(first_task_s)} runs had no running task within the timeout", file=sys.stderr)
        return 1
    starts = list(first_task_s.values())
    result = {
        "benchmark": "alert_latency",
        "alerts": len(create_ms),
        "profile": args.profile,
        "rate_per_s": args.rate,
        "achieved_rate_per_s": round(achieved_rate, 2),
        "p50_ms": round(percentile(create_ms, 50), 1),
        "p95_ms": round(percentile(create_ms, 95), 1),
        "max_ms": round(max(create_ms), 1),
        "max_ms_at_alert": create_ms.index(max(create_ms)),
        "p50_first_task_s": round(percentile(starts, 50), 2),
        "p95_first_task_s": round(percentile(starts, 95), 2),
        "max_first_task_s": round(max(starts), 2),
        "target_p95_ms": 250,
        "target_p95_first_task_s": 15,
        "meets_targets": percentile(create_ms, 95) <= 250 and percentile(starts, 95) <= 15,
        "airflow_parallelism": settings.airflow_parallelism if args.profile == "embedded" else "celery",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
