"""``pitcrew demo``: the closed loop on the local stack, from drift to a hot-swapped, recovered model.

Serve version 1 (trained on domain A) → send traffic that drifts to domain B, with feedback labels →
a Prometheus rule fires → Alertmanager posts to the webhook → a maintenance run confirms drift,
fine-tunes, compiles, registers and asks for approval → the demo approves through Airflow's REST API as
the ``approver`` user (``--interactive``: you approve in the UI) → hot-swap, canary, promotion →
accuracy on domain B recovers. Prints each step's time and the URLs to look at, and writes the summary to
``<home>/demo/summary.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

from pitcrew.cli import CommandError

#: Each step's time budget on a 2-core CPU machine, in the order the steps run; the whole demo's budget
#: is their sum, 300 s. Measured on such a machine (docs in the README); a step over budget is flagged in
#: the output, not failed: a slow machine still shows the whole loop.
STEP_BUDGET_S = (30, 45, 20, 60, 80, 65)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the closed-loop demo on the local stack")
    parser.add_argument("--model", default="textclf", help="model from the models file (default textclf)")
    parser.add_argument(
        "--interactive", action="store_true", help="wait for you to approve in the Airflow UI"
    )
    parser.add_argument(
        "--base-model", help="base model for version 1 (default: the entry's, the packaged MiniLM)"
    )
    parser.add_argument(
        "--alert-timeout", type=float, default=420, help="seconds to wait for the alert's run"
    )
    parser.add_argument(
        "--run-timeout", type=float, default=900, help="seconds to wait for the run to finish"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pitcrew.airflow_api import AirflowApi
    from pitcrew.demo import BackgroundTraffic, accuracy, demo_settings, send, write_demo_data
    from pitcrew.models_file import load_models_file
    from pitcrew.pipeline.bootstrap import bootstrap
    from pitcrew.serving.client import TritonControl
    from pitcrew.settings import get_settings
    from pitcrew.stack.components import airflow_password
    from pitcrew.stack.runner import Stack

    started = time.monotonic()
    steps: dict[str, float] = {}
    over: list[str] = []

    def step(name: str, since: float) -> float:
        budget = STEP_BUDGET_S[len(steps)]
        steps[name] = round(time.monotonic() - since, 1)
        if steps[name] > budget:
            over.append(name)
        print(f"[{time.monotonic() - started:6.0f}s] {name}: {steps[name]:.0f}s (budget {budget}s"
              f"{', OVER' if steps[name] > budget else ''})", flush=True)  # fmt: skip
        return time.monotonic()

    settings = demo_settings(get_settings())
    entry = load_models_file(settings.models_file).get(args.model)
    mark = time.monotonic()
    stack = Stack(settings)
    stack.down()  # the demo's alert timings differ from a plain `stack up`
    stack.up()
    mark = step("stack up", mark)

    data = write_demo_data(entry)
    result = bootstrap(entry, settings, base_model=args.base_model)
    mark = step(f"version {result['version']} trained on domain A, registered, serving", mark)

    triton = TritonControl(settings.triton_http_url)
    acc_a, _ = accuracy(triton, entry.name, data["eval_a"])
    before, _ = accuracy(triton, entry.name, data["eval_b"])
    print(f"         version {result['version']}: accuracy {acc_a:.3f} on domain A, {before:.3f} on domain B")

    api = AirflowApi(settings.airflow_url, "admin", airflow_password(settings, "admin"))
    dag_id = f"pitcrew_maintenance_{entry.name}"
    api.wait_for_dag(dag_id)
    known = {r.dag_run_id for r in api.runs.get_dag_runs(dag_id, limit=100).dag_runs}
    # A normal day first (the unknown-token rule compares the last minute with a longer baseline) ...
    baseline = send(triton, entry.name, data["traffic_a"])
    # ... then the drift: new-domain traffic, whose true labels arrive as feedback.
    sent = send(triton, entry.name, data["traffic_b"], feedback_root=entry.feedback)
    mark = step(
        f"{baseline.sent} domain-A then {sent.sent} domain-B requests sent (B with feedback labels)", mark
    )

    run_id = None
    with BackgroundTraffic(
        settings.triton_http_url,
        entry.name,
        data["eval_b"],
        interval_s=2.0,
        max_seconds=args.alert_timeout + args.run_timeout,
    ) as traffic:
        deadline = time.monotonic() + args.alert_timeout
        while run_id is None and time.monotonic() < deadline:
            fresh = [
                r for r in api.runs.get_dag_runs(dag_id, limit=100).dag_runs if r.dag_run_id not in known
            ]
            run_id = fresh[0].dag_run_id if fresh else None
            time.sleep(3)
        if run_id is None:
            raise CommandError(
                f"no maintenance run appeared within {args.alert_timeout:.0f}s; check Prometheus alerts at "
                f"{settings.prometheus_url}/classic/alerts and Alertmanager at {settings.alertmanager_url}"
            )
        conf = api.runs.get_dag_run(dag_id, run_id).conf or {}
        alert = (conf.get("alert") or {}).get("name", "?")
        mark = step(f"alert {alert} fired; Alertmanager started run {run_id}", mark)

        api.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, args.run_timeout)
        mark = step("drift confirmed, fine-tuned, evaluated, compiled, registered, replayed", mark)
        approval_url = f"{settings.airflow_url}/dags/{dag_id}/runs/{run_id}/tasks/approval/required_actions"
        if args.interactive:
            print(f"         approve (or reject) in the Airflow UI: {approval_url}  (user admin or approver)")
        else:
            approver = AirflowApi(settings.airflow_url, "approver", airflow_password(settings, "approver"))
            approver.respond(dag_id, run_id, "approval", "Approve")
            print("         approved through Airflow's REST API as the demo user 'approver'")
        state = api.wait_for_run(dag_id, run_id, args.run_timeout)
        mark = step(f"approval, hot-swap, canary and promotion: run {state}", mark)

    after, versions = accuracy(triton, entry.name, data["eval_b"])
    acc_a_after, _ = accuracy(triton, entry.name, data["eval_a"])
    summary = {
        "run": run_id,
        "run_state": state,
        "alert": alert,
        "versions_serving": sorted(versions),
        "accuracy_domain_b": {"before": round(before, 3), "after": round(after, 3)},
        "accuracy_domain_a": {"before": round(acc_a, 3), "after": round(acc_a_after, 3)},
        # clients' view of the swap: requests sent while the run swapped and watched the canary, and failed
        "background_traffic": {"sent": traffic.result.sent, "failed": traffic.result.failed},
        "step_seconds": steps,
        "total_seconds": round(time.monotonic() - started, 1),
        "budget_seconds": sum(STEP_BUDGET_S),
        "steps_over_budget": over,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    summary_file = settings.home_dir / "demo" / "summary.json"
    summary_file.write_text(json.dumps(summary, indent=2))
    print()
    print(json.dumps(summary, indent=2))
    print(f"\nSummary        {summary_file}")
    print(f"\nAirflow UI     {settings.airflow_url}/dags/{dag_id}/runs/{run_id}  (admin password: "
          f"{settings.home_dir / 'airflow' / 'passwords.json'})")  # fmt: skip
    print(f"MLflow UI      {settings.mlflow_url}/#/models/{entry.name}")
    print(f"Triton metrics {settings.triton_metrics_url}")
    print(f"Prometheus     {settings.prometheus_url}/classic/alerts")  # Debian's 2.42 serves its UI under /classic
    return 0 if state == "success" else 1
