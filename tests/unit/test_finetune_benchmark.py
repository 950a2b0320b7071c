"""benchmarks/finetune.py run for real on the tiny model: its JSON line is complete and self-consistent
(no speed is asserted: the figures live in the benchmark's output, not in tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import finetune as bench
from training.precision import pick_precision


def test_one_json_line_with_both_contenders_side_by_side(tiny_base: Path, capsys: pytest.CaptureFixture) -> None:
    assert bench.main(["--base-model", str(tiny_base), "--steps", "3", "--n-train", "48", "--n-eval", "24",
                       "--rounds", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    line = json.loads(lines[-1])
    assert line["benchmark"] == "finetune" and line["steps"] == 3 and line["rounds"] == 2
    assert line["pitcrew_precision"] == pick_precision("cpu")  # the default chose what this CPU computes
    for name in ("pitcrew", "hf_trainer"):
        speeds, accuracies = line["all_samples_per_s"][name], line["all_eval_accuracy"][name]
        assert len(speeds) == 2 and all(speed > 0 for speed in speeds)
        assert len(accuracies) == 2 and all(0.0 <= a <= 1.0 for a in accuracies)
    assert line["eval_rows"] == 24
    ratio = line["pitcrew_samples_per_s"] / line["hf_trainer_samples_per_s"]
    assert line["ratio"] == pytest.approx(ratio, rel=5e-3)  # recomputed from speeds rounded to 0.01
    assert line["accuracy_ok"] is (line["pitcrew_eval_accuracy"] >= line["hf_trainer_eval_accuracy"])
    assert line["meets_targets"] is (line["ratio"] >= bench.TARGET_RATIO and line["accuracy_ok"])
