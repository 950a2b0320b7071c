"""A short run of benchmarks/hotswap.py: swaps both ways under concurrent load lose no request.

The full run (16 clients, 6 swaps, >= 20,000 requests) is the benchmark itself; this keeps it working and
checks behaviour only: no failed request, both directions swapped, traffic flowing during the swaps, the
right version serving after. Timings and throughput depend on the machine: the benchmark reports them
against its targets (``targets_met``), this test does not assert them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pitcrew.settings import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("runtime", ["single", "pair"])
def test_short_benchmark_swaps_both_ways_without_failures(tmp_path, runtime):
    argv = [
        sys.executable, str(REPO_ROOT / "benchmarks" / "hotswap.py"), "--runtime", runtime,
        "--clients", "8", "--swaps", "2", "--steady-s", "3", "--gap-s", "1",
        "--min-requests", "2000", "--max-seconds", "60", "--workdir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400, cwd=REPO_ROOT)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failures"] == 0, report["first_failures"]
    assert report["requests"] > 0
    assert report["p50_swap_ms"] is not None, "no request was answered during a swap"
    assert report["swaps"] == 2 and report["directions"] == ["down", "up"]
    assert report["serving_after"] == [1]
    assert report["runtime"] == runtime
    assert set(report) >= {"p50_steady_ms", "p99_steady_ms", "p99_swap_ms", "swap_seconds_median",
                           "max_swap_minus_protocol_s", "targets_met"}  # fmt: skip
