"""A short run of benchmarks/serving.py on a tiny artifact: every case measured, the (b)/(c) switch real.

The full run (MiniLM, 16 clients, 8 rounds) is the benchmark itself; ratios depend on the machine, so they
are reported, not asserted. What is asserted: no request failed, (b) wrote every text it served to the
inference log and counted it in its metrics, and (c) did neither.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pitcrew.settings import REPO_ROOT
from tests.integration.serving_artifacts import build_artifact

pytestmark = pytest.mark.integration
LABELS = ["billing", "technical", "account", "shipping"]


@pytest.mark.parametrize("runtime", ["single", "pair"])
def test_short_benchmark_measures_all_cases_and_switches_log_and_metrics(tmp_path, runtime):
    artifact = build_artifact(tmp_path / "artifact", LABELS)
    argv = [
        sys.executable, str(REPO_ROOT / "benchmarks" / "serving.py"), "--artifact", str(artifact),
        "--runtime", runtime, "--clients", "4", "--rounds", "2", "--seconds", "1", "--warmup-s", "0.5",
        "--batch-sizes", "1", "8", "--raw-layouts", "1x1", "--raw-search-s", "0.3", "--raw-finalists", "1",
        "--workdir", str(tmp_path / "work"),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400, cwd=REPO_ROOT)
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for case in ("raw_ort", "triton", "triton_bare"):
        assert report[f"{case}_texts_per_s"] > 0 and report[f"{case}_p99_ms"] >= report[f"{case}_p50_ms"]
    assert report["failures"] == {"triton": 0, "triton_bare": 0}, report["first_failures"]
    assert report["requests"]["triton"] > 0 and report["requests"]["triton_bare"] > 0
    # the warm-up's texts are served, logged and counted too
    assert report["inference_log_rows"]["triton"] == report["predictions_counted"]["triton"]
    assert report["predictions_counted"]["triton"] >= report["requests"]["triton"]
    assert report["predictions_counted"]["triton_bare"] == 0
    assert report["raw_ort_best"] == {"ort_threads": 1, "callers": 1, "batch": report["raw_ort_best"]["batch"]}
    assert report["clients"] == 4 and report["runtime"] == runtime
    assert set(report) >= {"ratio_vs_raw", "ratio_vs_bare", "meets_targets", "config", "load_average_1m"}
    assert done.returncode == (0 if report["meets_targets"] else 1)
