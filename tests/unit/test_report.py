"""monitoring.report: strict JSON and a self-contained HTML page with a chart per column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import check_drift
from monitoring.report import render_html, report_json


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"x": rng.normal(size=800), "label": rng.choice(["a", "b", "c"], 800),
                        "text": rng.choice(["short one", "another short text"], 800)})
    cur = pd.DataFrame({"x": rng.normal(0.6, 1, 800), "label": rng.choice(["a", "b", "<new>"], 800),
                        "text": rng.choice(["short one", "another short text"], 800)})
    cur.loc[:10, "x"] = np.nan
    return check_drift(ref, cur)


def test_json_has_the_documented_fields(report) -> None:
    data = json.loads(report_json(report))
    assert data["drift"] is True and data["reason"] == report.reason
    for col in data["columns"]:
        assert {"column", "test", "statistic", "p_value", "p_value_adjusted", "effect_size", "drifted"} <= set(col)
    assert next(c for c in data["columns"] if c["column"] == "x")["missing_current"] == 11


def test_html_is_self_contained_with_a_chart_per_column(report) -> None:
    html = render_html(report)
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert html.count("<svg") == len(report.columns)
    assert "&lt;new&gt;" in html and "<new>" not in html  # category names are escaped
    assert "drift" in html and report.columns[0].column in html
