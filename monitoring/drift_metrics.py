"""Drift scores as Prometheus gauges, so Grafana can plot them and rules can alert on them.

A batch job (the drift task) has no long-lived /metrics endpoint, so the gauges live in a
registry of their own that the caller writes to a node-exporter textfile or pushes to a
Pushgateway. Labels are low-cardinality by construction: model and column names.
"""

from __future__ import annotations

import time
from contextlib import suppress
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from monitoring.drift import DriftReport

DECISIONS = ("drift", "no_drift", "insufficient_data")


class DriftMetrics:
    """The ``pitcrew_drift_*`` gauges in one registry; :meth:`observe` records one report."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        per_column = ["model", "column", "test"]
        self.p_value = Gauge("pitcrew_drift_p_value", "Raw p-value of the column's drift test.",
                             per_column, registry=self.registry)
        self.p_value_adjusted = Gauge("pitcrew_drift_p_value_adjusted",
                                      "P-value after multiple-testing correction across columns.",
                                      per_column, registry=self.registry)
        self.statistic = Gauge("pitcrew_drift_statistic", "Test statistic (KS D or chi-squared).",
                               per_column, registry=self.registry)
        self.effect_size = Gauge("pitcrew_drift_effect_size",
                                 "Effect size (normalised Wasserstein or Jensen–Shannon distance).",
                                 per_column, registry=self.registry)
        self.column_drifted = Gauge("pitcrew_drift_column_drifted", "1 if the column drifted, else 0.",
                                    per_column, registry=self.registry)
        self.detected = Gauge("pitcrew_drift_detected", "1 if the dataset-level decision is drift, else 0.",
                              ["model"], registry=self.registry)
        self.decision = Gauge("pitcrew_drift_decision", "1 for the current decision, 0 for the others.",
                              ["model", "decision"], registry=self.registry)
        self.drifted_columns = Gauge("pitcrew_drift_drifted_columns", "Number of drifted columns.",
                                     ["model"], registry=self.registry)
        self.current_rows = Gauge("pitcrew_drift_current_rows", "Rows in the checked window.",
                                  ["model"], registry=self.registry)
        self.last_check = Gauge("pitcrew_drift_last_check_timestamp_seconds",
                                "Unix time of the last completed drift check.", ["model"], registry=self.registry)

    def observe(self, report: DriftReport, model: str, *, now: float | None = None) -> None:
        """Set every gauge from ``report``; untested columns export no p-value (absent, not zero)."""
        for col in report.columns:
            labels = (model, col.column, col.test)
            for gauge, value in (
                (self.p_value, col.p_value),
                (self.p_value_adjusted, col.p_value_adjusted),
                (self.statistic, col.statistic),
                (self.effect_size, col.effect_size),
            ):
                if value is None:
                    with suppress(KeyError):  # never set: nothing to remove
                        gauge.remove(*labels)
                else:
                    gauge.labels(*labels).set(value)
            self.column_drifted.labels(*labels).set(1.0 if col.drifted else 0.0)
        self.detected.labels(model).set(1.0 if report.drift else 0.0)
        for decision in DECISIONS:
            self.decision.labels(model, decision).set(1.0 if report.decision == decision else 0.0)
        self.drifted_columns.labels(model).set(sum(c.drifted for c in report.columns))
        self.current_rows.labels(model).set(report.n_current)
        self.last_check.labels(model).set(time.time() if now is None else now)

    def write_textfile(self, path: str | Path) -> Path:
        """Atomically write the registry in the text exposition format (node-exporter textfile)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), self.registry)
        return path


def export_report(report: DriftReport, model: str, registry: CollectorRegistry | None = None) -> DriftMetrics:
    """Convenience: a fresh :class:`DriftMetrics` (optionally on ``registry``) holding ``report``."""
    metrics = DriftMetrics(registry)
    metrics.observe(report, model)
    return metrics
