"""The closed loop as one test: ``pitcrew demo``, the README's proof, run and judged.

Nothing is triggered by hand: version 1 (the packaged MiniLM fine-tuned on domain A) serves in the real
Triton; traffic drifts to domain B; the real Prometheus rule fires; the real Alertmanager posts to the
webhook; the real maintenance DAG confirms drift, fine-tunes, compiles, registers and asks for approval;
the approval is answered through Airflow's REST API as the ``approver`` user; the run hot-swaps, watches
the canary and promotes. The test then judges what a user would: the drifted domain recovered, the old one
did not regress, no client request failed across the swap, and Prometheus holds the run's outcome.

It runs the demo's own compressed timings (docs in the README) in a private home on free ports, with a copy
of the repository's ``textclf`` entry whose data lives in that home. About 4 to 5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_api_client import PrometheusConnect

from pitcrew.settings import Settings
from tests.stack_fixtures import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "textclf"
#: Version 1 never saw domain B (0.395 in the measured demos); the fine-tuned version reached 1.0. Half of
#: that gain is the bar: a loop that retrains on the wrong rows, or promotes the old version, falls short.
MIN_GAIN_DOMAIN_B = 0.3
#: Domain A must not be traded away for B: at most two eval rows in a hundred may flip.
MAX_DROP_DOMAIN_A = 0.02


def _models_file(home: Path) -> Path:
    """The repository's ``textclf`` entry, its data, inference log and feedback moved into ``home``."""
    entries = yaml.safe_load((REPO_ROOT / "models.yaml").read_text())["models"]
    entry = next(e for e in entries if e["name"] == MODEL)
    entry.update(train_data=str(home / "data" / "train.parquet"), golden_data=str(home / "data" / "golden.parquet"),
                 inference_log=str(home / "inference_log"), feedback=str(home / "feedback"))
    path = home / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}, sort_keys=False))
    return path


def _pitcrew(settings: Settings, *args: str, timeout: float) -> tuple[int, str]:
    """Run a ``pitcrew`` command as the README gives it; its exit code and its output's tail. The output goes
    to a file in the home as it comes, so a demo that hangs still shows the step it got to."""
    env = {**os.environ, **settings.as_env()}
    command = [str(Path(sys.executable).parent / "pitcrew"), *args]
    log = settings.home_dir / f"pitcrew-{args[0]}.log"
    with log.open("w") as out:
        try:
            code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  cwd=REPO_ROOT).returncode
        except subprocess.TimeoutExpired:
            code = -1
    return code, log.read_text()[-8000:]


def _deployed_in_prometheus(settings: Settings, wait_s: float = 60) -> float | None:
    """``pitcrew_pipeline_runs_total{outcome="deployed"}`` as Prometheus scraped it from the API server's plugin;
    None if the series never appeared within ``wait_s`` (scrapes run every few seconds)."""
    prometheus = PrometheusConnect(url=settings.prometheus_url, disable_ssl=True)
    query = f'pitcrew_pipeline_runs_total{{model="{MODEL}",outcome="deployed"}}'
    deadline = time.monotonic() + wait_s
    while True:
        result = prometheus.custom_query(query)
        if result and float(result[0]["value"][1]) > 0 or time.monotonic() > deadline:
            return float(result[0]["value"][1]) if result else None
        time.sleep(2)


@pytest.mark.timeout(1800)  # the demo's 300 s alert and 600 s run limits, stack up and down, on a busy CI machine
def test_drift_alert_to_promotion_recovers_the_drifted_domain(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    settings = make_settings(home, models_file=_models_file(home))
    try:
        code, output = _pitcrew(settings, "demo", "--alert-timeout", "300", "--run-timeout", "600", timeout=1500)
        assert code == 0, output
        summary = json.loads((home / "demo" / "summary.json").read_text())

        assert summary["run_state"] == "success", output
        assert summary["run"].startswith("alert__"), summary  # Alertmanager started it, not a person
        assert summary["versions_serving"] == ["2"], summary  # the challenger, promoted, serves alone
        b, a = summary["accuracy_domain_b"], summary["accuracy_domain_a"]
        assert b["after"] >= b["before"] + MIN_GAIN_DOMAIN_B, summary
        assert a["after"] >= a["before"] - MAX_DROP_DOMAIN_A, summary
        traffic = summary["background_traffic"]
        assert traffic["sent"] > 0 and traffic["failed"] == 0, traffic

        assert _deployed_in_prometheus(settings) == 1.0
    finally:
        code, output = _pitcrew(settings, "stack", "down", timeout=300)
        assert code == 0, output
