"""Drift report outputs: JSON for machines and a self-contained HTML page for people (and MLflow).

The HTML draws its own inline SVG (no matplotlib, no scripts, no external assets), so the single
file renders anywhere it is opened, including as an MLflow artifact. Histograms come from the
report itself (computed during the check), so the raw tables are not needed again here.
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from monitoring.drift import ColumnResult, DriftReport

REF_COLOUR = "#4C78A8"
CUR_COLOUR = "#F58518"
DECISION_COLOUR = {"drift": "#C0392B", "no_drift": "#2E8B57", "insufficient_data": "#B7950B"}
MAX_CATEGORIES = 20
WIDTH, HEIGHT, PAD = 530, 180, 34


def report_json(report: DriftReport, *, indent: int | None = 2) -> str:
    """Strict JSON (non-finite numbers become null, which every parser accepts)."""
    return json.dumps(_finite(report.to_dict()), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3e}"


def _proportions(counts: list[int]) -> list[float]:
    total = sum(counts) or 1
    return [c / total for c in counts]


def _axes(label_left: str, label_right: str, top: float) -> list[str]:
    base = HEIGHT - PAD
    return [
        f'<line x1="{PAD}" y1="{base}" x2="{WIDTH - 8}" y2="{base}" stroke="#555"/>',
        f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{base}" stroke="#555"/>',
        f'<text x="{PAD - 4}" y="16" font-size="10" text-anchor="end">{top:.0%}</text>',
        f'<text x="{PAD}" y="{HEIGHT - 18}" font-size="10">{escape(label_left)}</text>',
        f'<text x="{WIDTH - 8}" y="{HEIGHT - 18}" font-size="10" text-anchor="end">{escape(label_right)}</text>',
    ]


def _legend() -> str:
    return (
        f'<rect x="{WIDTH - 180}" y="4" width="10" height="10" fill="{REF_COLOUR}" fill-opacity="0.55"/>'
        f'<text x="{WIDTH - 166}" y="13" font-size="11">reference</text>'
        f'<rect x="{WIDTH - 100}" y="4" width="10" height="10" fill="{CUR_COLOUR}" fill-opacity="0.55"/>'
        f'<text x="{WIDTH - 86}" y="13" font-size="11">current</text>'
    )


def numeric_svg(histogram: dict[str, Any]) -> str:
    """Overlaid histograms (proportions) of reference and current on the reference's bins."""
    edges = histogram["edges"]
    ref, cur = _proportions(histogram["reference"]), _proportions(histogram["current"])
    top = max(ref + cur) or 1.0
    plot_w, plot_h = WIDTH - PAD - 8, HEIGHT - PAD - 14
    bar_w = plot_w / len(ref)
    parts = _axes(f"{edges[0]:.4g}", f"{edges[-1]:.4g}", top)
    for series, colour in ((ref, REF_COLOUR), (cur, CUR_COLOUR)):
        for i, p in enumerate(series):
            h = plot_h * p / top
            parts.append(
                f'<rect x="{PAD + i * bar_w:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour}" fill-opacity="0.55"/>'
            )
    parts.append(_legend())
    return f'<svg width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'


def categorical_svg(histogram: dict[str, Any]) -> str:
    """Side-by-side bars per category (the most frequent ones if there are many)."""
    ref, cur = _proportions(histogram["reference"]), _proportions(histogram["current"])
    order = sorted(range(len(ref)), key=lambda i: -max(ref[i], cur[i]))[:MAX_CATEGORIES]
    names = [histogram["categories"][i] for i in order]
    ref, cur = [ref[i] for i in order], [cur[i] for i in order]
    top = max(ref + cur) or 1.0
    plot_w, plot_h = WIDTH - PAD - 8, HEIGHT - PAD - 14
    slot = plot_w / len(names)
    parts = _axes("", "", top)
    for i, name in enumerate(names):
        for j, (p, colour) in enumerate(((ref[i], REF_COLOUR), (cur[i], CUR_COLOUR))):
            h = plot_h * p / top
            x = PAD + i * slot + slot * (0.1 + 0.4 * j)
            parts.append(
                f'<rect x="{x:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{slot * 0.4:.1f}" height="{h:.1f}" '
                f'fill="{colour}" fill-opacity="0.8"/>'
            )
        parts.append(
            f'<text x="{PAD + (i + 0.5) * slot:.1f}" y="{HEIGHT - PAD + 12}" font-size="10" text-anchor="middle">'
            f"{escape(str(name)[:12])}</text>"
        )
    parts.append(_legend())
    return f'<svg width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'


def _column_card(col: ColumnResult) -> str:
    if col.histogram is None:
        chart = '<p class="muted">no histogram for this test</p>'
    elif col.kind == "categorical":
        chart = categorical_svg(col.histogram)
    else:
        chart = numeric_svg(col.histogram)
    status = "drifted" if col.drifted else ("insufficient data" if col.status == "insufficient_data" else "stable")
    badge = {"drifted": "drift", "stable": "no_drift", "insufficient data": "insufficient_data"}[status]
    extra = ", ".join(f"{k}={_fmt(v)}" for k, v in col.effect_sizes.items())
    return f"""
<section class="card">
  <h3>{escape(col.column)} <span class="badge" style="background:{DECISION_COLOUR[badge]}">{status}</span></h3>
  <p class="muted">{escape(col.kind)} · {escape(col.test)} · statistic {_fmt(col.statistic)} · p {_fmt(col.p_value)}
   · adjusted p {_fmt(col.p_value_adjusted)} · {escape(col.effect_measure)} {_fmt(col.effect_size)}</p>
  <p class="muted">rows {col.n_reference} / {col.n_current} · missing {col.missing_reference} / {col.missing_current}
   {("· " + escape(extra)) if extra else ""}</p>
  {chart}
</section>"""


def render_html(report: DriftReport, *, title: str = "pitcrew drift report") -> str:
    """One self-contained HTML page: decision, reason, a summary table and a chart per column."""
    colour = DECISION_COLOUR[report.decision]
    rows = "".join(
        f"<tr><td>{escape(c.column)}</td><td>{escape(c.test)}</td><td>{_fmt(c.statistic)}</td>"
        f"<td>{_fmt(c.p_value)}</td><td>{_fmt(c.p_value_adjusted)}</td><td>{_fmt(c.effect_size)}</td>"
        f"<td>{'yes' if c.drifted else ('n/a' if c.status == 'insufficient_data' else 'no')}</td></tr>"
        for c in report.columns
    )
    cards = "".join(_column_card(c) for c in report.columns)
    cfg = report.config
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1190px; }}
.banner {{ padding: 12px 16px; color: white; border-radius: 6px; background: {colour}; }}
.banner h1 {{ margin: 0 0 4px 0; font-size: 22px; }}
table {{ border-collapse: collapse; margin: 16px 0; font-size: 13px; }}
td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ box-sizing: border-box; border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; width: 560px; }}
.card h3 {{ margin: 4px 0; font-size: 15px; }}
.badge {{ color: white; font-size: 11px; padding: 2px 6px; border-radius: 4px; }}
.muted {{ color: #666; font-size: 12px; margin: 2px 0; }}
</style></head><body>
<div class="banner"><h1>{escape(title)}: {escape(report.decision.replace("_", " "))}</h1>
<div>{escape(report.reason)}</div></div>
<p class="muted">reference rows {report.n_reference} · current rows {report.n_current} · alpha {cfg.alpha}
 · correction {escape(cfg.correction)} · effect required {cfg.require_effect}
 (numeric ≥ {cfg.numeric_effect_threshold}, categorical ≥ {cfg.categorical_effect_threshold})</p>
<table><tr><th>column</th><th>test</th><th>statistic</th><th>p-value</th><th>adjusted p</th>
<th>effect size</th><th>drifted</th></tr>{rows}</table>
<div class="grid">{cards}</div>
</body></html>
"""
