"""monitoring.drift_metrics: pitcrew_drift_* gauges per model and column, written as a textfile."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from monitoring.drift import check_drift
from monitoring.drift_metrics import DriftMetrics, export_report


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_gauges_carry_the_report(tmp_path) -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=500), "y": rng.normal(size=500)})
    cur = pd.DataFrame({"x": rng.normal(1.0, 1, 500), "y": rng.normal(size=500)})
    report = check_drift(ref, cur)
    path = export_report(report, "textclf").write_textfile(tmp_path / "drift.prom")
    samples = _samples(path.read_text())
    x = (("column", "x"), ("model", "textclf"), ("test", "ks"))
    assert samples[("pitcrew_drift_p_value", x)] == report.columns[0].p_value
    assert samples[("pitcrew_drift_effect_size", x)] == report.columns[0].effect_size
    assert samples[("pitcrew_drift_column_drifted", x)] == 1.0
    assert samples[("pitcrew_drift_detected", (("model", "textclf"),))] == 1.0
    assert samples[("pitcrew_drift_decision", (("decision", "no_drift"), ("model", "textclf")))] == 0.0
    assert samples[("pitcrew_drift_drifted_columns", (("model", "textclf"),))] == 1.0
    assert samples[("pitcrew_drift_last_check_timestamp_seconds", (("model", "textclf"),))] > 0


def test_untested_column_exports_no_p_value() -> None:
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.normal(size=300), "y": rng.normal(size=300)})
    cur = pd.DataFrame({"x": rng.normal(size=300), "y": np.full(300, np.nan)})
    metrics = DriftMetrics()
    metrics.observe(check_drift(ref, cur), "m", now=1.0)
    names = {(s.name, s.labels.get("column")) for f in metrics.registry.collect() for s in f.samples}
    assert ("pitcrew_drift_p_value", "x") in names and ("pitcrew_drift_p_value", "y") not in names
    assert ("pitcrew_drift_column_drifted", "y") in names
