"""benchmarks/drift.py: pitcrew's own part on a small size (the peers run only by hand)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "drift.py"


def test_pitcrew_part_prints_one_json_line(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench_drift", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--rows", "30000", "--numeric", "4", "--categorical", "2", "--skip-peers",
                        "--workdir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["rows"] == 30000 and result["pitcrew_s"] > 0 and result["pitcrew_peak_mem_ratio"] > 0
    assert result["pvalue_max_abs_diff_vs_scipy"] <= 1e-9
    assert result["drift"] is True and {"num_00", "num_01", "cat_00", "cat_01"} <= set(result["default_drifted"])
