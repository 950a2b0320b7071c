"""Release steps: register the challenger, ask a human, swap it into Triton, watch it, promote or roll back.

Clients come in as arguments (built by the Hooks in ``operators/``); nothing here reads credentials.
The order of effects keeps the registry honest: the ``champion`` alias moves only after Triton serves
the new version and its canary passed, and a rollback restores Triton first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pitcrew import registry
from pitcrew.canary import CanaryMetric, CanaryPolicy
from pitcrew.models_file import ModelEntry
from pitcrew.pipeline.workspace import Workspace

log = logging.getLogger(__name__)


def lineage_tags(
    *,
    dag_run_id: str,
    trigger: str,
    alert: dict | None,
    window: dict,
    drift: dict | None,
    parent_version: int | None,
    evaluation: dict,
    compile_report: dict,
) -> dict[str, Any]:
    """The lineage tags every registered version carries (docs/design.md, "Registry").

    ``runtime`` is what the version is served with and ``runtime_reason`` why that is not the requested
    runtime (empty when it is). ``compile_target`` names, for a shipped TensorRT plan, the TensorRT version
    and GPU that built it (a plan runs only there); without a plan ``tensorrt`` is the build status
    (``skipped``, ``failed_parity``).
    """
    trt = compile_report.get("tensorrt") or {}
    built = trt.get("status") == "built"
    return {
        "airflow_dag_run_id": dag_run_id,
        "trigger": trigger,
        "alert_fingerprint": (alert or {}).get("fingerprint", ""),
        "alert_name": (alert or {}).get("name", ""),
        "data_window": f"{window.get('start', '')}/{window.get('end', '')}",
        "drift_report": drift or {"skipped": True},
        "parent_version": "" if parent_version is None else str(parent_version),
        "metrics_vs_champion": {"decision": evaluation.get("decision"), **evaluation.get("comparison", {})},
        "runtime": compile_report.get("runtime") or "",
        "runtime_reason": compile_report.get("runtime_reason") or "",
        "compile_target": {
            "onnxruntime": compile_report.get("versions", {}).get("onnxruntime"),
            "tensorrt": trt.get("tensorrt_version") if built else trt.get("status"),
            "gpu": trt.get("gpu_name") if built else None,
            "compute_capability": trt.get("compute_capability") if built else None,
        },
    }


def register(
    client, entry: ModelEntry, ws: Workspace, *, artifact: Path, checkpoint: Path, tags: dict, metrics: dict
) -> int:
    """Register ``artifact`` as a new version, with the run's reports and training rows (the next drift reference)."""
    version = registry.register_version(
        client, entry.name, serving_dir=artifact, checkpoint_dir=checkpoint, reports_dir=ws.reports,
        training_data=ws.train, tags=tags, metrics=metrics,
    )  # fmt: skip
    return version.version


def approval_body(
    *,
    model: str,
    version: int,
    champion: int | None,
    evaluation: dict,
    replay: dict,
    drift: dict | None,
    links: dict,
    why: str = "",
    history: list[str] | None = None,
    shadow: dict | None = None,
    plan: str = "",
) -> str:
    """The Markdown an approver reads: why the run exists, what changes for users if they say yes.

    Each figure is its own list item: Markdown joins adjacent lines into one paragraph, so a line break
    alone would run them together.
    """
    ch, ca = evaluation.get("challenger", {}), evaluation.get("champion") or {}

    def acc(scores: dict, split: str) -> str:
        value = (scores.get(split) or {}).get("accuracy")
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"### Deploy `{model}` version {version} (replacing {champion if champion is not None else 'nothing'})",
        "",
    ]
    if why:
        lines += [f"**Why this run:** {why}", ""]
    if history:
        lines += ["**Recent history:**", "", *[f"- {item}" for item in history], ""]
    lines += [
        "| metric | champion | challenger |",
        "| --- | --- | --- |",
        f"| accuracy, new traffic hold-out | {acc(ca, 'eval')} | {acc(ch, 'eval')} |",
        f"| accuracy, golden set | {acc(ca, 'golden')} | {acc(ch, 'golden')} |",
        f"| macro-F1, new traffic | {_fmt((ca.get('eval') or {}).get('macro_f1'))} | {_fmt((ch.get('eval') or {}).get('macro_f1'))} |",
        "",
        f"**Gate:** {evaluation.get('decision')} — {'; '.join(evaluation.get('reasons', []))}",
        "",
    ]
    if replay.get("rows"):
        lines += [
            f"**Replay of {replay['rows']} logged requests** (compared with "
            f"{replay.get('compared_with', 'the champion')}):",
            "",
            f"- agreement: {_fmt(replay.get('agreement'))}",
            f"- mean top-class confidence: {_fmt(replay.get('champion_mean_confidence'))} → "
            f"{_fmt(replay.get('challenger_mean_confidence'))} ({_fmt(replay.get('confidence_shift'), signed=True)})",
        ]
        flips = replay.get("label_flips") or {}
        if flips:
            lines.append("- label flips, champion → challenger: "
                         + ", ".join(f"{k.replace('->', ' → ')} {v}" for k, v in list(flips.items())[:8]))  # fmt: skip
        if replay.get("labelled_rows"):
            lines.append(f"- accuracy on the {replay['labelled_rows']} requests with a feedback label: "
                         f"{_fmt(replay.get('champion_accuracy'))} → {_fmt(replay.get('challenger_accuracy'))}")  # fmt: skip
        lines.append("")
    else:
        lines += [f"**Replay:** {replay.get('note', 'no logged traffic to replay')}", ""]
    if shadow and shadow.get("shadowed"):
        lines += [f"**Live shadow** ({shadow.get('seconds', 0):.0f} s, {shadow.get('compared', 0):.0f} live texts "
                  "answered by both versions, clients saw only the champion):", "",
                  f"- agreement: {_fmt(shadow.get('agreement'))}",
                  f"- mean confidence shift: {_fmt(shadow.get('mean_confidence_shift'), signed=True)}"]  # fmt: skip
        if not shadow.get("enough"):
            lines.append(f"- fewer than {shadow.get('min_requests')} texts: too little traffic to go by")
        lines.append("")
    if drift:
        lines.append(f"**Drift:** {drift.get('decision')} — {drift.get('reason')}")
        drifted = [c["column"] for c in drift.get("columns", []) if c.get("drifted")]
        unnamed = [c for c in drifted if c not in str(drift.get("reason", ""))]
        if unnamed:  # the reason often names them already
            lines += ["", f"drifted columns: {', '.join(unnamed)}"]
        lines.append("")
    lines += ["**Links:** " + " · ".join(f"[{name}]({url})" for name, url in links.items()), ""]
    lines.append((plan or "Approve to hot-swap into Triton (canary watch follows, automatic rollback on failure).")
                 + " No answer before the timeout counts as Reject.")  # fmt: skip
    return "\n".join(lines)


def why_this_run(params: dict, *, run_type: str | None, triggered_by: str | None) -> str:
    """What started the run, from its params (the conf the webhook, the schedule or a person gave)."""
    trigger = params.get("trigger") or run_type or "unknown"
    alert = params.get("alert") or {}
    if isinstance(alert, dict) and alert.get("name"):
        started = f", firing since {alert['starts_at']}" if alert.get("starts_at") else ""
        what = f"alert `{alert['name']}` ({alert.get('source') or trigger}{started})"
    elif trigger == "schedule":
        what = "the nightly retrain schedule"
    else:
        what = f"started by hand by {triggered_by}" if triggered_by else f"trigger `{trigger}`"
    flags = [name for name in ("force_retrain", "skip_drift") if params.get(name) in (True, "true", "True")]
    return what + (f"; with {', '.join(flags)}" if flags else "")


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def download_champion(client, entry: ModelEntry, ws: Workspace) -> dict:
    """Fetch the champion's checkpoint and serving artifact from MLflow into the workspace."""
    version = registry.alias_version(client, entry.name, registry.CHAMPION)
    if version is None:
        raise registry.RegistryError(
            f"{entry.name} has no '{registry.CHAMPION}' in MLflow; deploy a first version (pitcrew bootstrap)"
        )
    checkpoint = registry.download(
        client, entry.name, version, registry.CHECKPOINT_PATH, ws.champion_checkpoint.parent
    )
    serving = registry.download(
        client, entry.name, version, registry.SERVING_PATH, ws.champion_serving.parent
    )
    return {"version": version, "checkpoint": str(checkpoint), "serving": str(serving)}


def canary_metrics(entry: ModelEntry, version: int, window: str = "1m") -> list[CanaryMetric]:
    """PromQL per model and version; a version with no traffic gives empty/NaN answers (inconclusive)."""
    sel = f'model="{entry.name}",version="{version}"'
    t = entry.thresholds
    return [
        CanaryMetric(
            "failure_ratio",
            f"sum(increase(nv_inference_request_failure{{{sel}}}[{window}])) / "
            f"(sum(increase(nv_inference_request_success{{{sel}}}[{window}])) + "
            f"sum(increase(nv_inference_request_failure{{{sel}}}[{window}])))",
            max_value=t.canary_failure_ratio,
        ),
        CanaryMetric(
            "p99_latency_seconds",
            f'max(nv_inference_request_summary_us{{{sel},quantile="0.99"}}) / 1e6',
            max_value=t.canary_p99_latency_s,
        ),
        CanaryMetric(
            "mean_confidence",
            f"sum(increase(pitcrew_top_class_confidence_sum{{{sel}}}[{window}])) / "
            f"sum(increase(pitcrew_top_class_confidence_count{{{sel}}}[{window}]))",
            min_value=t.canary_min_confidence,
        ),
    ]


def canary_policy(entry: ModelEntry) -> CanaryPolicy:
    """The model's Argo-style analysis settings: initial delay, interval, count and failure limit."""
    t = entry.thresholds
    return CanaryPolicy(
        initial_delay_s=t.canary_initial_delay_s,
        interval_s=t.canary_interval_s,
        count=t.canary_count,
        failure_limit=t.canary_failure_limit,
    )


def promote(client, entry: ModelEntry, *, version: int, approver: str | None) -> dict:
    return registry.promote(client, entry.name, version, approver=approver)
