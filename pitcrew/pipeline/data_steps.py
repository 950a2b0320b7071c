"""Data steps: read the recent traffic window, check its quality, test it for drift."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pandas as pd

from pitcrew.models_file import ModelEntry
from pitcrew.pipeline.workspace import Workspace

log = logging.getLogger(__name__)


class PipelineDataError(ValueError):
    """The data a run needs is missing or unusable; the message says which and why."""


def load_window(entry: ModelEntry, ws: Workspace, *, hours: float, now: dt.datetime | None = None) -> dict:
    """The last ``hours`` of the model's inference log joined with feedback labels, saved to the workspace."""
    from monitoring.inference_log import read_inference_log

    end = now or dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(hours=hours)
    try:
        frame = read_inference_log(
            entry.inference_log, start, end, feedback_root=entry.feedback, model=entry.name
        )
    except FileNotFoundError as exc:
        raise PipelineDataError(f"{entry.name}: no inference log at {entry.inference_log}") from exc
    frame.to_parquet(ws.window, index=False)
    labelled = int(frame["feedback_label"].notna().sum()) if len(frame) else 0
    log.info(
        "%s: window %s..%s has %d requests, %d with feedback", entry.name, start, end, len(frame), labelled
    )
    return {"rows": len(frame), "labelled": labelled, "start": start.isoformat(), "end": end.isoformat()}


def data_quality(entry: ModelEntry, ws: Workspace) -> dict:
    """Quality of the labelled rows a fine-tune would learn from; bad rows are quarantined, never dropped."""
    from monitoring.quality import QualitySpec, check_quality

    window = pd.read_parquet(ws.window)
    labelled = window[window["feedback_label"].notna()][["request_id", "text", "feedback_label"]]
    labelled = labelled.rename(columns={"feedback_label": "label"}).reset_index(drop=True)
    spec = QualitySpec.for_text_classifier(entry.labels, duplicate_subset=("request_id",))
    result = check_quality(labelled, spec)
    result.clean.to_parquet(ws.labelled, index=False)
    result.quarantined.to_parquet(ws.quarantine, index=False)
    summary = {**result.to_dict(), "window_rows": len(window), "quarantine_file": str(ws.quarantine)}
    (ws.reports / "quality.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def drift(
    entry: ModelEntry, ws: Workspace, metrics_dir: Path | None = None, reference: str | None = None
) -> dict:
    """Compare the window with the champion's training data: text features and the label mix.

    ``reference`` is the champion's training snapshot (default: the model's ``train_data``). The
    reference's labels are the true labels the champion learned; the window's are the champion's
    predictions, so a shift there is prediction drift. Writes JSON and HTML reports and exports the
    scores as Prometheus gauges.
    """
    from monitoring.drift import check_drift
    from monitoring.drift_config import DriftConfig
    from monitoring.report import render_html

    source = reference or entry.train_data
    try:
        reference = _read_table(source)[["text", "label"]]
    except (FileNotFoundError, KeyError) as exc:
        raise PipelineDataError(f"{entry.name}: reference data {source} unusable: {exc}") from exc
    window = pd.read_parquet(ws.window)
    # An empty window gets text columns: float64 empties would fail the drift test's dtype check instead
    # of reading as insufficient data.
    empty = pd.DataFrame({"text": [], "label": []}, dtype=object)
    current = window[["text", "label"]] if len(window) else empty
    config = DriftConfig.from_thresholds(entry.thresholds, columns=("text", "label"), use_tokenizer=True)
    report = check_drift(reference, current, config)
    result = report.to_dict()
    (ws.reports / "drift.json").write_text(json.dumps(result, indent=2, default=str))
    (ws.reports / "drift.html").write_text(
        render_html(report, title=f"{entry.name}: drift of the last window")
    )
    if metrics_dir is not None:
        _export_drift_gauges(entry.name, report, metrics_dir)
    return {
        "decision": report.decision,
        "drift": report.drift,
        "reason": report.reason,
        "columns": [
            {k: c.get(k) for k in ("column", "test", "p_value_adjusted", "effect_size", "drifted")}
            for c in result["columns"]
        ],
        "report_json": str(ws.reports / "drift.json"),
        "report_html": str(ws.reports / "drift.html"),
    }


def _export_drift_gauges(model: str, report, metrics_dir: Path) -> None:
    from monitoring.drift_metrics import export_report

    try:
        export_report(report, model).write_textfile(metrics_dir / f"drift_{model}.prom")
    except OSError as exc:  # metrics are best effort: a scrape gap must not fail the run
        log.warning("could not export drift gauges for %s: %s", model, exc)


def _read_table(path: str) -> pd.DataFrame:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=True)
    return pd.read_parquet(path)


def split_for_training(
    entry: ModelEntry,
    ws: Workspace,
    *,
    reference: str | None = None,
    eval_fraction: float = 0.25,
    replay_ratio: float = 0.5,
    seed: int = 0,
) -> dict:
    """Training and evaluation rows for a fine-tune on the new traffic.

    The evaluation set is a seeded hold-out of the new labelled traffic (the drifted slice the challenger
    must handle), disjoint in text from the training rows. Training mixes the rest with a sample of the champion's training data (``replay_ratio``
    of the new rows) so the model does not forget the old domain.
    """
    # One row per distinct text (the latest label wins), so no text is both trained on and evaluated on.
    labelled = pd.read_parquet(ws.labelled)[["text", "label"]].drop_duplicates("text", keep="last")
    if labelled["label"].nunique() < 2 or len(labelled) < 8:
        raise PipelineDataError(
            f"{entry.name}: {len(labelled)} clean labelled row(s) with {labelled['label'].nunique()} class(es) "
            "in the window: not enough feedback to fine-tune (send labels, or widen window_hours)"
        )
    shuffled = labelled.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_eval = max(4, int(len(shuffled) * eval_fraction))
    evaluation, new_train = shuffled.iloc[:n_eval], shuffled.iloc[n_eval:]
    reference = _read_table(reference or entry.train_data)[["text", "label"]]
    n_replay = min(len(reference), int(len(new_train) * replay_ratio))
    replay = reference.sample(n=n_replay, random_state=seed) if n_replay else reference.iloc[:0]
    replay = replay[~replay["text"].isin(evaluation["text"])]
    train = pd.concat([new_train, replay], ignore_index=True).sample(frac=1.0, random_state=seed)
    train.to_parquet(ws.train, index=False)
    evaluation.to_parquet(ws.eval, index=False)
    return {
        "train_rows": len(train),
        "new_rows": len(new_train),
        "replay_rows": n_replay,
        "eval_rows": len(evaluation),
    }
