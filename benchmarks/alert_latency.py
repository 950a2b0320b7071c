"""Alert webhook latency on the local stack: POST → DAG run created, and → its first task running.

Starts a private Airflow (free ports, temp home) whose DAGs folder holds the stand-in
``pitcrew_maintenance_textclf`` and whose plugins folder is the repo's ``plugins/``; posts N distinct
Alertmanager-format alerts (one every ``--interval-s``) to ``/pitcrew/alerts``; reads each run's first task
start time through Airflow's REST API. Prints one JSON line.

    .venv/bin/python benchmarks/alert_latency.py --alerts 60

Targets (issue 6): p95 ≤ 250 ms to a created run (the response names it); p95 ≤ 15 s to the first task running.
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

sys.path.insert(0, str(REPO_ROOT))  # tests/: free ports, a private stack home, stand-in DAGs
from tests.alert_stack import write_dags_folder, write_models_file  # noqa: E402
from tests.stack_fixtures import make_settings, running_stack  # noqa: E402

DAG_ID = "pitcrew_maintenance_textclf"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: the reported value was observed)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=60, help="distinct firing alerts to post (>= 50)")
    parser.add_argument("--interval-s", type=float, default=1.0, help="seconds between posts")
    parser.add_argument("--first-task-timeout-s", type=float, default=180.0, help="give up waiting after this")
    args = parser.parse_args(argv)
    if args.alerts < 1 or args.interval_s < 0:
        parser.error("--alerts must be >= 1 and --interval-s >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pitcrew-alert-bench-") as tmp:
        root = Path(tmp)
        settings = make_settings(
            root / "home",
            dags_folder=write_dags_folder(root / "dags"),
            plugins_folder=REPO_ROOT / "plugins",
            deploy_dir=write_fast_deploy(root / "deploy"),
            models_file=write_models_file(root / "models.yaml", max_auto_runs_per_day=args.alerts + 10),
        )
        with running_stack(settings, only=("airflow",)):
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
                for i in range(args.alerts):
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
                    time.sleep(args.interval_s)
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
        "interval_s": args.interval_s,
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
        "airflow_parallelism": settings.airflow_parallelism,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
