"""Feedback and accuracy metrics for ``GET /pitcrew/metrics``, read from the label index at scrape time.

Measured accuracy is per model and per version that answered, over the requests served in the model's
``accuracy_window_hours`` that have a label, with the row count beside it so a rule can ignore a figure
resting on a handful of labels. The threshold and minimum rows are exported too, so one generic rule
(``ModelAccuracyLow``) serves every model without per-model PromQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from pitcrew.feedback.body import REASONS
from pitcrew.feedback.index import LAG_BUCKETS, LabelIndex
from pitcrew.models_file import ModelEntry

KINDS = ("new", "relabel", "duplicate")


class FeedbackCollector:
    def __init__(self, models: Mapping[str, ModelEntry], index: LabelIndex, *, now: float | None = None) -> None:
        self.models = models
        self.index = index
        self.now = now

    def collect(self) -> Iterator[Metric]:
        counts = self.index.counts()
        names = sorted(self.models)
        received = CounterMetricFamily(
            "pitcrew_feedback_labels_received",
            "Feedback labels accepted, by kind: new, relabel (a changed label), duplicate (same label again).",
            labels=["model", "kind"],
        )
        rejected = CounterMetricFamily(
            "pitcrew_feedback_labels_rejected", "Feedback rows rejected, by reason.", labels=["model", "reason"]
        )
        lag = HistogramMetricFamily(
            "pitcrew_feedback_label_lag_seconds",
            "Time from serving a request to its label (labelled_at, else when received).",
            labels=["model"],
        )
        for model in names:
            for kind in KINDS:
                received.add_metric([model, kind], counts.get((model, "received", kind), 0.0))
            for reason in REASONS:
                rejected.add_metric([model, reason], counts.get((model, "rejected", reason), 0.0))
            buckets = [(str(float(b)), counts.get((model, "lag_le", repr(b)), 0.0)) for b in LAG_BUCKETS]
            total = counts.get((model, "lag", "count"), 0.0)
            lag.add_metric([model], [*buckets, ("+Inf", total)], counts.get((model, "lag", "sum"), 0.0))
        yield received
        yield rejected
        yield lag
        yield from self._accuracy(names)

    def _accuracy(self, names: list[str]) -> Iterator[Metric]:
        now = time.time() if self.now is None else self.now
        accuracy = GaugeMetricFamily(
            "pitcrew_model_accuracy",
            "Accuracy measured on feedback labels of requests served in the model's accuracy window, by the "
            "version that answered.",
            labels=["model", "version"],
        )
        rows = GaugeMetricFamily(
            "pitcrew_model_accuracy_rows", "Labelled requests behind pitcrew_model_accuracy.", labels=["model", "version"]
        )
        threshold = GaugeMetricFamily(
            "pitcrew_model_accuracy_threshold", "min_live_accuracy of the model (models.yaml).", labels=["model"]
        )
        min_rows = GaugeMetricFamily(
            "pitcrew_model_accuracy_min_rows", "accuracy_min_rows of the model (models.yaml).", labels=["model"]
        )
        for model in names:
            entry = self.models[model]
            since = now - entry.thresholds.accuracy_window_hours * 3600
            for measured in self.index.accuracy(model, since=since):
                accuracy.add_metric([model, measured.version], measured.accuracy)
                rows.add_metric([model, measured.version], measured.rows)
            if entry.thresholds.min_live_accuracy is not None:
                threshold.add_metric([model], entry.thresholds.min_live_accuracy)
            min_rows.add_metric([model], entry.thresholds.accuracy_min_rows)
        yield from (accuracy, rows, threshold, min_rows)
