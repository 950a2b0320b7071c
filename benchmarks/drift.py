"""Benchmark: pitcrew's drift check vs Evidently's data-drift preset and alibi-detect's TabularDrift.

Writes one reference and one current table once as Parquet (default 1,000,000 rows × 20 numeric +
5 categorical columns, a few columns shifted on purpose, one shifted negligibly), then times each
tool on the same files, each net of loading the data:

- pitcrew: fitting the reference profile (once per champion) and the check against it, timed
  separately; ``pitcrew_s`` is the check, ``pitcrew_fit_s`` the one-off profile;
- Evidently ``DataDriftPreset`` and alibi-detect ``TabularDrift`` (fit + predict), each in its own
  virtual environment under ``.pitcrew/bench/`` (their pins conflict with pitcrew's: Evidently
  0.7 needs pandas < 3; alibi-detect needs numpy < 2 and pyarrow 25.0.1).

Timings of pitcrew and alibi-detect are the minimum of ``--repeats`` runs (the usual guard against
other load on the machine); Evidently, at a minute or more per run, runs once. pitcrew runs in a
fresh process; its peak memory is the peak RSS while fitting and checking (the
high-water mark is reset after loading) minus the RSS before loading, so it includes the loaded
data itself, divided by the raw data size (pandas ``memory_usage(deep=True)`` of both tables). Its p-values are compared with scipy's own ``ks_2samp`` (default
``method="auto"``, which is the asymptotic branch at this size) and ``chi2_contingency``.
Decisions are compared with alibi-detect, which runs the same tests (Bonferroni, alpha 0.05);
pitcrew runs with ``require_effect=False`` and Bonferroni for that comparison, and its default
decision (BH, effect sizes required) is reported too. Evidently is compared on speed only.

Run by hand: ``.venv/bin/python benchmarks/drift.py`` (prints one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEERS = {"evidently": "requirements-drift-evidently.txt", "alibi": "requirements-drift-alibi.txt"}


def generate(rows: int, numeric: int, categorical: int, seed: int, out: Path) -> dict:
    """Write reference.parquet and current.parquet; return what was shifted."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    tables = {}
    shifts = {"num_00": "mean +0.2 sd", "num_01": "sd x1.3", "num_02": "mean +0.01 sd (negligible)",
              "cat_00": "proportions changed", "cat_01": "new category"}
    for side in ("reference", "current"):
        cols = {}
        for i in range(numeric):
            loc, scale = i * 0.5, 1.0 + i * 0.1
            if side == "current" and i == 0:
                loc += 0.2 * scale
            if side == "current" and i == 1:
                scale *= 1.3
            if side == "current" and i == 2:
                loc += 0.01 * scale
            cols[f"num_{i:02d}"] = rng.normal(loc, scale, rows) if i % 3 else rng.gamma(2.0, scale, rows) + loc
        for j in range(categorical):
            k = 5 + 3 * j
            probs = np.linspace(1, 2, k)
            names = [f"c{j}_{v}" for v in range(k + 1)]
            if side == "current" and j == 0:
                probs = probs[::-1].copy()
            if side == "current" and j == 1:
                probs = np.append(probs, probs.mean() * 0.5)
            else:
                probs = np.append(probs, 0.0)
            codes = rng.choice(k + 1, rows, p=probs / probs.sum())
            cols[f"cat_{j:02d}"] = pd.Categorical.from_codes(codes, categories=names)
        frame = pd.DataFrame(cols)
        frame.to_parquet(out / f"{side}.parquet", index=False)
        tables[side] = frame
    return shifts


def _status_bytes(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak RSS) of this process, from /proc (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0), so loading's own peak is not counted."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def pitcrew_worker(data: Path, repeats: int) -> dict:
    """Time pitcrew in this (fresh) process; also check p-values against scipy."""
    import pandas as pd
    import pyarrow as pa
    from scipy import stats

    from monitoring.drift import check_drift
    from monitoring.drift_config import DriftConfig
    from monitoring.profile import ReferenceProfile

    baseline = _status_bytes("VmRSS")
    reference = pd.read_parquet(data / "reference.parquet")
    current = pd.read_parquet(data / "current.parquet")
    raw = int(reference.memory_usage(deep=True).sum() + current.memory_usage(deep=True).sum())
    # Loading is not the check: give back Arrow's freed read buffers, then start the peak afresh.
    pa.default_memory_pool().release_unused()
    _reset_peak_rss()
    same_tests = DriftConfig(correction="bonferroni", require_effect=False, text_columns=())
    fit_times, check_times = [], []
    profile = None
    for _ in range(repeats):
        profile = None  # let the previous profile go first, or two would count towards the peak
        t0 = time.perf_counter()
        profile = ReferenceProfile.fit(reference, same_tests)
        fit_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        report = check_drift(profile, current, same_tests)
        check_times.append(time.perf_counter() - t0)
    peak = _status_bytes("VmHWM")
    default = check_drift(profile, current, DriftConfig(text_columns=()))
    max_diff = 0.0
    for col in report.columns:
        if col.test == "ks":
            expected = stats.ks_2samp(reference[col.column].to_numpy(), current[col.column].to_numpy()).pvalue
        else:
            table = pd.concat([reference[col.column].value_counts(), current[col.column].value_counts()], axis=1)
            table = table.fillna(0).to_numpy().T
            expected = stats.chi2_contingency(table[:, table.sum(0) > 0]).pvalue
        max_diff = max(max_diff, abs(float(expected) - col.p_value))
    return {
        "pitcrew_s": min(check_times),
        "pitcrew_median_s": statistics.median(check_times),
        "pitcrew_fit_s": min(fit_times),
        "pitcrew_peak_mem_ratio": (peak - baseline) / raw,
        "raw_bytes": raw,
        "pvalue_max_abs_diff_vs_scipy": max_diff,
        "drift": report.drift,
        "significant": {c.column: c.drifted for c in report.columns},
        "default_decision": default.decision,
        "default_drifted": [c.column for c in default.columns if c.drifted],
    }


EVIDENTLY = r"""
import json, sys, time
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
ref = pd.read_parquet(sys.argv[1] + "/reference.parquet"); cur = pd.read_parquet(sys.argv[1] + "/current.parquet")
num = [c for c in ref.columns if c.startswith("num_")]; cat = [c for c in ref.columns if c.startswith("cat_")]
t0 = time.perf_counter()
definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=definition),
                                          Dataset.from_pandas(ref, data_definition=definition))
result = snapshot.dict()
seconds = time.perf_counter() - t0
count = next(m["value"] for m in result["metrics"] if m["metric_name"].startswith("DriftedColumnsCount"))
print(json.dumps({"seconds": seconds, "drifted_count": count["count"], "drifted_share": count["share"]}))
"""

ALIBI = r"""
import json, sys, time
import numpy as np, pandas as pd
from alibi_detect.cd import TabularDrift
ref = pd.read_parquet(sys.argv[1] + "/reference.parquet"); cur = pd.read_parquet(sys.argv[1] + "/current.parquet")
cols = list(ref.columns)
def matrix(df):
    return np.column_stack([df[c].cat.codes.to_numpy() if c.startswith("cat_") else df[c].to_numpy() for c in cols]).astype(np.float64)
x_ref, x_cur = matrix(ref), matrix(cur)
times, fit_times = [], []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    detector = TabularDrift(x_ref, p_val=0.05, categories_per_feature={i: None for i, c in enumerate(cols) if c.startswith("cat_")})
    fit_times.append(time.perf_counter() - t0)
    pred = detector.predict(x_cur, drift_type="batch", return_p_val=True)  # Bonferroni over the features
    times.append(time.perf_counter() - t0)
seconds, fit_s = min(times), min(fit_times)
threshold = pred["data"]["threshold"]  # p_val / n_features with drift_type="batch"
flags = {c: bool(p < threshold) for c, p in zip(cols, pred["data"]["p_val"])}
print(json.dumps({"seconds": seconds, "fit_s": fit_s, "drift": bool(pred["data"]["is_drift"]), "significant": flags}))
"""


def ensure_venv(workdir: Path, name: str) -> Path:
    """Create ``workdir/<name>`` from the pinned requirements once; return its python."""
    venv = workdir / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    requirements = Path(__file__).parent / PEERS[name]
    if not marker.exists() or marker.read_text() != requirements.read_text():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
        marker.write_text(requirements.read_text())
    return python


def run_json(cmd: list[str]) -> dict:
    """Run a worker; its last stdout line is its JSON result. A failure shows the worker's stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per table")
    parser.add_argument("--numeric", type=int, default=20, help="numeric columns")
    parser.add_argument("--categorical", type=int, default=5, help="categorical columns")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--workdir", type=Path, default=REPO / ".pitcrew" / "bench", help="data and peer venvs")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repetitions of pitcrew and alibi-detect (the minimum is reported; Evidently runs once)")
    parser.add_argument("--skip-peers", action="store_true", help="time pitcrew only (no Evidently/alibi)")
    parser.add_argument("--pitcrew-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pitcrew_worker:
        print(json.dumps(pitcrew_worker(args.pitcrew_worker, args.repeats)))
        return 0
    data = args.workdir / f"data-{args.rows}x{args.numeric}+{args.categorical}-s{args.seed}"
    data.mkdir(parents=True, exist_ok=True)
    shifts = generate(args.rows, args.numeric, args.categorical, args.seed, data)
    load_before = os.getloadavg()[0]
    pitcrew = run_json([sys.executable, __file__, "--pitcrew-worker", str(data), "--repeats", str(args.repeats)])
    result = {
        "benchmark": "drift",
        "rows": args.rows,
        "numeric_columns": args.numeric,
        "categorical_columns": args.categorical,
        "cpus": os.cpu_count(),
        "shifted": shifts,
        **{k: v for k, v in pitcrew.items() if k not in ("significant",)},
    }
    if not args.skip_peers:
        evidently = run_json([str(ensure_venv(args.workdir, "evidently")), "-c", EVIDENTLY, str(data)])
        alibi = run_json([str(ensure_venv(args.workdir, "alibi")), "-c", ALIBI, str(data), str(args.repeats)])
        result.update(
            evidently_s=evidently["seconds"],
            evidently_drifted_columns=evidently["drifted_count"],
            alibi_s=alibi["seconds"],
            alibi_fit_s=alibi["fit_s"],
            speedup_vs_evidently=evidently["seconds"] / pitcrew["pitcrew_s"],
            speedup_vs_alibi=alibi["seconds"] / pitcrew["pitcrew_s"],
            speedup_vs_alibi_incl_fit=alibi["seconds"] / (pitcrew["pitcrew_s"] + pitcrew["pitcrew_fit_s"]),
            decisions_agree=alibi["drift"] == pitcrew["drift"],
            columns_agree=alibi["significant"] == pitcrew["significant"],
            columns_disagree=sorted(c for c in alibi["significant"] if alibi["significant"][c] != pitcrew["significant"].get(c)),
        )
    # Other work on the machine slows every tool; the load average says how much there was.
    result["loadavg_1m_before_after"] = [load_before, os.getloadavg()[0]]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
