"""The pure parts of benchmarks/serving.py and benchmarks/serving_load.py (no timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks.serving import CASES, judge, parse_args, raw_settings, round_order, setting_name, spread
from benchmarks.serving_load import mixed_texts, pooled, summarize


def test_summary_is_texts_per_second_and_percentiles_in_ms():
    figures = summarize([0.001 * i for i in range(1, 101)], completed=100, seconds=4.0)
    assert figures == {"texts_per_s": 25.0, "p50_ms": 50.5, "p99_ms": 99.01}
    assert summarize([], completed=0, seconds=1.0) == {"texts_per_s": 0.0, "p50_ms": None, "p99_ms": None}
    assert summarize([], completed=3, seconds=0.0)["texts_per_s"] == 0.0


def test_pooled_slices_sum_texts_and_time_and_pool_latencies():
    slices = [{"completed": 10, "seconds": 2.0, "latencies": [0.01] * 10},
              {"completed": 30, "seconds": 2.0, "latencies": [0.03] * 30}]  # fmt: skip
    figures = pooled(slices)
    assert figures["texts_per_s"] == 10.0  # 40 texts in 4 s, not the mean of 5 and 15 per second
    assert figures["p50_ms"] == 30.0 and figures["p99_ms"] == 30.0


def test_judge_applies_both_targets():
    assert judge(100.0, 80.0, 84.0)["targets"] == {"triton_ge_0.8x_raw": True, "triton_ge_0.95x_bare": True}
    verdict = judge(100.0, 79.0, 90.0)
    assert verdict["ratio_vs_raw"] == 0.79 and verdict["ratio_vs_bare"] == 0.878
    assert verdict["targets"] == {"triton_ge_0.8x_raw": False, "triton_ge_0.95x_bare": False}
    assert judge(0.0, 5.0, 0.0)["ratio_vs_raw"] == 0.0


def test_rounds_rotate_so_each_case_takes_every_position():
    orders = [round_order(i) for i in range(3)]
    assert all(sorted(order) == sorted(CASES) for order in orders)
    for position in range(3):
        assert sorted(order[position] for order in orders) == sorted(CASES)
    assert round_order(3) == round_order(0)


def test_raw_settings_cover_every_layout_and_batch_size():
    assert raw_settings(["1x1", "1x2"], [1, 8]) == [(1, 1, 1), (1, 1, 8), (1, 2, 1), (1, 2, 8)]
    assert setting_name((2, 1, 16)) == "threads2_callers1_batch16"
    with pytest.raises(ValueError, match="THREADSxCALLERS"):
        raw_settings(["2"], [1])


def test_spread_reports_min_median_max():
    assert spread([1.0, 0.5, 2.0, 0.9]) == {"min": 0.5, "median": 0.95, "max": 2.0}


def test_mixed_texts_are_seeded_and_of_mixed_length():
    texts = mixed_texts(64)
    assert texts == mixed_texts(64) and texts != mixed_texts(64, seed=1)
    words = [len(t.split()) for t in texts]
    assert min(words) < 20 and max(words) > 80  # one message to several: a few to over 128 tokens


def test_defaults_are_the_issue_setup():
    args = parse_args([])
    assert args.clients == 16 and args.batch_sizes == [1, 8, 16, 32, 64] and args.runtime == "single"
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "0"])
