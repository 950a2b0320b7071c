from __future__ import annotations

import math

from pitcrew.rollout.queries import version_queries, version_window


def test_each_version_is_selected_by_model_and_version_over_the_window() -> None:
    champion = version_queries("textclf", 3, 60, champion=3)
    challenger = version_queries("textclf", 4, 60, champion=3)
    assert champion.keys() == challenger.keys()
    for name, query in challenger.items():
        selector = 'model="textclf",challenger="4"' if name == "failures" else 'model="textclf",version="4"'
        assert selector in query, (name, query)
        assert "[60s]" in query or name in ("accuracy", "labelled"), (name, query)
    assert "nv_inference_request_failure" in champion["failures"]
    assert "pitcrew_route_fallbacks_total" in challenger["failures"]
    assert challenger["p99_s"].startswith("histogram_quantile(0.99, sum by (le)")


def test_answers_become_a_version_window() -> None:
    answers = {
        "requests": [({}, 120.0)], "failures": [({}, 3.0)], "p99_s": [({}, 0.042)],
        "mean_confidence": [({}, 0.81)],
        "class_counts": [({"class": "billing"}, 70.0), ({"class": "shipping"}, 50.0), ({"class": "x"}, math.nan)],
        "accuracy": [({}, 0.9)], "labelled": [({}, 40.0)],
    }  # fmt: skip
    window = version_window(4, answers)
    assert (window.version, window.requests, window.failures, window.p99_s) == (4, 120.0, 3.0, 0.042)
    assert window.class_counts == {"billing": 70.0, "shipping": 50.0}
    assert (window.labelled, window.correct) == (40, 36)


def test_no_data_is_nan_for_measures_and_zero_for_counts() -> None:
    window = version_window(4, {})
    assert window.requests == 0 and window.failures == 0 and window.labelled == 0
    assert math.isnan(window.p99_s) and math.isnan(window.mean_confidence) and window.class_counts == {}


def test_an_offset_reads_an_earlier_window() -> None:
    earlier = version_queries("textclf", 3, 4, champion=3, offset_s=30)
    assert "[4s] offset 30s" in earlier["requests"] and "[4s] offset 30s" in earlier["p99_s"]
    assert "offset" not in version_queries("textclf", 3, 4, champion=3, offset_s=0.4)["requests"]
