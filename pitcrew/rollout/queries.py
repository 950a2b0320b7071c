"""The PromQL behind one comparison (pitcrew/rollout/compare.py): what each version did over a window.

Every figure comes from what the champion's front records per answering version (model.py: latency,
fallbacks) and from the business metrics each version exports under the model's name, so the two versions
are measured the same way over the same window, whichever of them a request reached:

- requests: ``pitcrew_request_seconds_count``, the requests each version answered;
- failures: for the challenger, the requests it failed and the champion answered instead
  (``pitcrew_route_fallbacks_total``: no client saw them, but they are the challenger's errors); for the
  champion, Triton's failed requests of the model (a request the champion's front fails is the champion's);
- p99 latency: ``histogram_quantile`` over ``pitcrew_request_seconds_bucket``;
- mean top-class confidence: ``pitcrew_top_class_confidence_sum / _count``;
- the predicted-class mix: ``pitcrew_predictions_total`` by class;
- accuracy: ``pitcrew_model_accuracy`` and ``_rows`` from the feedback labels (over the model's accuracy
  window, not the step's: labels arrive later than requests, and the challenger's rows are all recent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pitcrew.rollout.compare import VersionWindow

#: What one query answers: ``[(labels, value)]``, one per series (empty: no data).
Answer = Sequence[tuple[Mapping[str, str], float]]


def version_queries(
    model: str, version: int, window_s: float, *, champion: int, offset_s: float = 0.0
) -> dict[str, str]:
    """PromQL for each figure of ``version`` over the ``window_s`` seconds that ended ``offset_s`` ago."""
    r = f"[{max(int(round(window_s)), 1)}s]" + (f" offset {int(round(offset_s))}s" if offset_s >= 1 else "")
    sel = f'model="{model}",version="{version}"'

    def total(metric: str, selector: str = sel) -> str:
        return f"sum(increase({metric}{{{selector}}}{r}))"

    if version == champion:
        failures = total("nv_inference_request_failure")
    else:
        failures = total("pitcrew_route_fallbacks_total", f'model="{model}",challenger="{version}"')
    return {
        "requests": total("pitcrew_request_seconds_count"),
        "failures": failures,
        "p99_s": f"histogram_quantile(0.99, sum by (le) (increase(pitcrew_request_seconds_bucket{{{sel}}}{r})))",
        "mean_confidence": f"{total('pitcrew_top_class_confidence_sum')} / {total('pitcrew_top_class_confidence_count')}",
        "class_counts": f"sum by (class) (increase(pitcrew_predictions_total{{{sel}}}{r}))",
        "accuracy": f"max(pitcrew_model_accuracy{{{sel}}})",
        "labelled": f"max(pitcrew_model_accuracy_rows{{{sel}}})",
    }


def version_window(version: int, answers: Mapping[str, Answer]) -> VersionWindow:
    """The figures of one version from the answers to :func:`version_queries` (no data: NaN or 0)."""

    def one(name: str) -> float:
        values = [v for _, v in answers.get(name, ())]
        return float(values[0]) if values else math.nan

    def count(name: str) -> float:
        value = one(name)
        return 0.0 if math.isnan(value) else value  # an empty increase: nothing happened

    labelled = int(count("labelled"))
    accuracy = one("accuracy")
    correct = round(accuracy * labelled) if labelled and not math.isnan(accuracy) else 0
    classes = {labels.get("class", ""): float(v) for labels, v in answers.get("class_counts", ()) if not math.isnan(v)}
    return VersionWindow(
        version=version, requests=count("requests"), failures=count("failures"), p99_s=one("p99_s"),
        mean_confidence=one("mean_confidence"), class_counts=classes, labelled=labelled, correct=correct,
    )  # fmt: skip
