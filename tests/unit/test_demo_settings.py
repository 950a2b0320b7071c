"""The demo's compressed-time copies of the models file and of ``deploy/``."""

from __future__ import annotations

from pathlib import Path

import yaml

from pitcrew.commands.demo import STEP_BUDGET_S
from pitcrew.demo import DEMO_CANARY, DEMO_WINDOWS, demo_settings, write_demo_models_file
from pitcrew.models_file import load_models_file
from pitcrew.settings import REPO_ROOT, Settings

MODELS = """\
models:
  - name: shop
    runtime: python-onnxruntime
    base_model: ./encoders/small
    train_data: data/train.parquet
    inference_log: logs/shop
    feedback: feedback/shop
    labels: [a, b]
    thresholds:
      canary_p99_latency_s: 0.4
      canary_count: 9
"""


def test_demo_models_file_changes_only_the_canary_timing(tmp_path: Path) -> None:
    source = tmp_path / "project" / "models.yaml"
    source.parent.mkdir()
    source.write_text(MODELS)
    copy = write_demo_models_file(source, tmp_path / "home" / "demo" / "models.yaml")
    original, demo = load_models_file(source).models[0], load_models_file(copy).models[0]
    # Relative paths keep pointing into the source's folder, not the copy's.
    assert demo.train_data == str(tmp_path / "project" / "data" / "train.parquet") == original.train_data
    assert demo.base_model == original.base_model == str(tmp_path / "project" / "encoders" / "small")
    assert {k: getattr(demo.thresholds, k) for k in DEMO_CANARY} == DEMO_CANARY
    assert demo.thresholds.canary_p99_latency_s == 0.4  # bounds are the file's own
    changed = {k for k, v in original.model_dump().items() if demo.model_dump()[k] != v}
    assert changed == {"thresholds"}
    assert {k for k, v in original.thresholds.model_dump().items() if getattr(demo.thresholds, k) != v} == set(DEMO_CANARY)


def test_demo_settings_point_the_stack_at_both_copies(tmp_path: Path) -> None:
    settings = demo_settings(Settings(home=tmp_path / "home", models_file=REPO_ROOT / "models.yaml"))
    assert settings.models_file == tmp_path / "home" / "demo" / "models.yaml"
    assert load_models_file(settings.models_file).models[0].thresholds.canary_interval_s == DEMO_CANARY["canary_interval_s"]
    rules = yaml.safe_load((settings.deploy_dir / "prometheus" / "rules" / "pitcrew.yml").read_text())
    exprs = " ".join(str(r["expr"]) for g in rules["groups"] for r in g["rules"])
    assert "[15m]" not in exprs and "[6h]" not in exprs and "[30s]" in exprs
    assert set(DEMO_WINDOWS) == {"[5m]", "[15m]", "[6h]"}


def test_the_step_budgets_add_up_to_five_minutes() -> None:
    assert sum(STEP_BUDGET_S) == 300 and len(STEP_BUDGET_S) == 6
