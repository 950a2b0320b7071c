"""benchmarks/estimated_accuracy.py on tiny sizes: one JSON line with every key, errors in [0, 1]."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "estimated_accuracy.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_estimated_accuracy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_prints_one_json_line(tmp_path, capsys) -> None:
    argv = ["--base-model", "tiny", "--n-train", "64", "--n-eval", "32", "--epochs", "1", "--pool", "24",
            "--window", "8", "--batches", "3", "--shares", "0,0.5,1", "--workdir", str(tmp_path)]  # fmt: skip
    assert _module().main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in ("benchmark", "steps", "mae_in_domain", "mae_per_step", "raw_mae_per_step", "calibrated_beats_raw",
                "targets_met", "python", "cpus", "temperature", "atc_threshold"):  # fmt: skip
        assert key in result, key
    assert [s["b_share"] for s in result["steps"]] == [0.0, 0.5, 1.0]
    for name in ("mae_per_step", "raw_mae_per_step", "temperature_mae_per_step"):
        assert len(result[name]) == 3 and all(0.0 <= x <= 1.0 for x in result[name])
    assert result["mae_in_domain"] == result["mae_per_step"][0]
    assert result["calibrated_beats_raw"] == all(result["calibrated_beats_raw_per_step"])
    assert (tmp_path / "model" / "calibration.json").exists()
