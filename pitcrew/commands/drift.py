"""``pitcrew drift``: is the current window drifted from the reference? Exit 0 no, 1 yes, 2 error.

Insufficient data (too few rows, an all-missing column) also exits 2: it is not a "no".
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from monitoring.drift import DriftReport, check_drift
from monitoring.drift_config import DriftConfig
from monitoring.profile import ReferenceProfile
from pitcrew.cli import CommandError

EXIT = {"no_drift": 0, "drift": 1, "insufficient_data": 2}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("drift", help="test a current window against a reference for drift")
    parser.add_argument("--reference", required=True, type=Path,
                        help="reference table (Parquet file or folder, CSV) or a saved profile (.npz)")
    parser.add_argument("--current", required=True, type=Path, help="current window (Parquet file or folder, CSV)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--html", type=Path, help="write a self-contained HTML report here")
    parser.add_argument("--model", help="models-file entry whose thresholds to use (and metrics label)")
    parser.add_argument("--alpha", type=float, help="significance level of the whole check (default 0.05)")
    parser.add_argument("--correction", choices=["bh", "bonferroni", "none"], help="multiple-testing correction")
    parser.add_argument("--min-rows", type=int, help="fewer values than this on a side: insufficient data")
    parser.add_argument("--no-effect", action="store_true",
                        help="decide on corrected p-values alone (no effect-size threshold)")
    parser.add_argument("--columns", help="comma-separated columns to test (default: all but ids/timestamps)")
    parser.add_argument("--text-column", action="append", dest="text_columns",
                        help="text column to turn into length/token/unknown-rate features (repeatable; default text)")
    parser.add_argument("--tokenizer", action="store_true",
                        help="count tokens with the packaged MiniLM WordPiece tokenizer (adds unknown-token rate)")
    parser.add_argument("--save-profile", type=Path, help="also save the reference profile (.npz) for reuse")
    parser.add_argument("--metrics-textfile", type=Path, help="write pitcrew_drift_* gauges to this .prom file")
    parser.set_defaults(func=run)


def read_table(path: Path) -> pd.DataFrame:
    """Parquet (file or dataset folder) or CSV, by suffix."""
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    raise CommandError(f"{path}: unsupported format {path.suffix!r}; use Parquet or CSV")


def build_config(args: argparse.Namespace) -> DriftConfig:
    if args.model:
        from pitcrew.models_file import load_models_file
        from pitcrew.settings import get_settings

        config = DriftConfig.from_thresholds(load_models_file(get_settings().models_file).get(args.model).thresholds)
    else:
        config = DriftConfig()
    changes: dict = {}
    for name in ("alpha", "correction", "min_rows"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.no_effect:
        changes["require_effect"] = False
    if args.columns:
        changes["columns"] = tuple(c.strip() for c in args.columns.split(",") if c.strip())
    if args.text_columns:
        changes["text_columns"] = tuple(args.text_columns)
    if args.tokenizer:
        changes["use_tokenizer"] = True
    return replace(config, **changes)


def summary(report: DriftReport) -> str:
    lines = [f"{report.decision}: {report.reason}"]
    for c in report.columns:
        mark = "DRIFT" if c.drifted else ("n/a" if c.status == "insufficient_data" else "ok")
        p = "–" if c.p_value_adjusted is None else f"{c.p_value_adjusted:.3g}"
        effect = "–" if c.effect_size is None else f"{c.effect_size:.3g}"
        lines.append(f"  {mark:5s} {c.column:30s} {c.test:5s} adjusted p={p:10s} {c.effect_measure}={effect}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.reference.suffix.lower() == ".npz":
        reference = ReferenceProfile.load(args.reference)
    else:
        reference = ReferenceProfile.fit(read_table(args.reference), config)
    if args.save_profile:
        reference.save(args.save_profile)
    report = check_drift(reference, read_table(args.current), config)
    if args.html:
        from monitoring.report import render_html

        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(render_html(report), encoding="utf-8")
    if args.metrics_textfile:
        from monitoring.drift_metrics import export_report

        export_report(report, args.model or "default").write_textfile(args.metrics_textfile)
    if args.json:
        from monitoring.report import report_json

        print(report_json(report, indent=None))
    else:
        print(summary(report))
    if report.decision == "insufficient_data":
        print(f"pitcrew drift: insufficient data: {report.reason}", file=sys.stderr)
    return EXIT[report.decision]
