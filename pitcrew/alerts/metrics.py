"""Prometheus text for ``GET /pitcrew/metrics``: alert decisions from the shared state, plus pipeline textfiles.

Counts come from the SQLite state rather than process memory, so they are right across API-server
workers and restarts. Tasks write ``<home>/metrics/*.prom`` (Prometheus text format, e.g. with
``prometheus_client.write_to_textfile``); the valid files' families are merged in, an invalid file is
skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from pitcrew.alerts.policy import AlertPolicy

log = logging.getLogger(__name__)

#: A textfile larger than this is skipped: a runaway writer must not make every scrape slow.
MAX_TEXTFILE_BYTES = 1 << 20


class _StateCollector:
    def __init__(self, policy: AlertPolicy, rejected: dict[str, int], bad_textfiles: list[int]) -> None:
        self.policy = policy
        self.rejected = rejected
        self.bad_textfiles = bad_textfiles

    def collect(self) -> Iterator[Metric]:
        alerts = CounterMetricFamily(
            "pitcrew_alerts",
            "Alerts received by the pitcrew webhook, by source, model and decision.",
            labels=["source", "model", "decision"],
        )
        for (source, model, decision), count in sorted(self.policy.decision_counts().items()):
            alerts.add_metric([source, model, decision], count)
        yield alerts
        rejected = CounterMetricFamily(
            "pitcrew_webhook_rejected_requests",
            "Webhook requests refused before any alert was read (this API-server process), by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(self.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        bad = GaugeMetricFamily(
            "pitcrew_metrics_invalid_textfiles", "Textfiles under <home>/metrics skipped as invalid at this scrape."
        )
        bad.add_metric([], self.bad_textfiles[0])
        yield bad


def _textfile_families(folder: Path) -> tuple[list[Metric], int]:
    """The families of every valid textfile, merged by name, and how many files were invalid.

    Each model's pipeline textfile declares the same families (``pitcrew_pipeline_runs_total`` ...), so
    appending the files would repeat HELP and TYPE lines, which the exposition format forbids; samples of
    one family are merged into one family instead (a sample repeated across files keeps its first value).
    """
    merged: dict[str, Metric] = {}
    seen: set[tuple[str, tuple]] = set()
    invalid = 0
    if not folder.is_dir():
        return [], invalid
    for path in sorted(folder.glob("*.prom")):
        try:
            if path.stat().st_size > MAX_TEXTFILE_BYTES:
                raise ValueError("too large")
            families = list(text_string_to_metric_families(path.read_text()))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("skipping metrics textfile %s: %s", path, exc)
            invalid += 1
            continue
        for family in families:
            target = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in seen:
                    seen.add(key)
                    target.samples.append(sample)
    return list(merged.values()), invalid


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render_metrics(
    policy: AlertPolicy, textfile_dir: Path, rejected: dict[str, int], extra: Iterable[object] = ()
) -> bytes:
    """The full exposition: state-derived counters first (the ``extra`` collectors' too, e.g. feedback),
    then the families of the valid textfiles."""
    families, invalid = _textfile_families(textfile_dir)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StateCollector(policy, rejected, [invalid]))  # type: ignore[arg-type]
    for collector in extra:
        registry.register(collector)  # type: ignore[arg-type]
    registry.register(_Families(families))  # type: ignore[arg-type]
    return generate_latest(registry)


def metric_names(text: str) -> Iterable[str]:
    """Family names in an exposition (tests and the dashboard check use it)."""
    return [family.name for family in text_string_to_metric_families(text)]
