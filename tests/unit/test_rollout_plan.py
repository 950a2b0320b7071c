from __future__ import annotations

from pathlib import Path

import pytest

from pitcrew.models_file import ModelsFileError, load_models_file
from pitcrew.rollout.plan import Rollout, parse_duration

ENTRY = """
models:
  - name: textclf
    train_data: train.parquet
    inference_log: log
    feedback: fb
    labels: [a, b]
"""


def _load(tmp_path: Path, rollout: str):
    path = tmp_path / "models.yaml"
    path.write_text(ENTRY + rollout)
    return load_models_file(path).get("textclf").rollout


class TestDuration:
    @pytest.mark.parametrize(
        ("given", "seconds"),
        [(0, 0.0), (90, 90.0), (2.5, 2.5), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("1h", 3600.0),
         ("0.5m", 30.0), ("1m30s", 90.0)],
    )  # fmt: skip
    def test_seconds_and_argo_strings(self, given: object, seconds: float) -> None:
        assert parse_duration(given) == seconds

    @pytest.mark.parametrize("given", ["", "5", "5 minutes", "m", "1d", "-5s", True, None, [5], float("nan"), -1])
    def test_anything_else_is_refused_and_named(self, given: object) -> None:
        with pytest.raises(ValueError, match="duration"):
            parse_duration(given)


class TestRolloutInTheModelsFile:
    def test_default_is_all_at_once_with_argo_like_steps_ready(self, tmp_path: Path) -> None:
        rollout = _load(tmp_path, "")
        assert rollout.mode == "all_at_once" and not rollout.weighted
        assert [(s.weight, s.pause) for s in rollout.steps] == [(10, 300), (50, 300), (100, 0)]

    def test_a_canary_plan_as_written_in_the_issue(self, tmp_path: Path) -> None:
        rollout = _load(tmp_path, """    rollout:
      mode: canary
      steps: [{weight: 10, pause: 5m}, {weight: 50, pause: 5m}, {weight: 100}]
      analysis: {interval: 30s, count: 4, failure_limit: 1}
      tolerances: {p99_latency_ratio: 1.5, accuracy_drop: 0.05}
""")
        assert rollout.weighted
        assert [(s.weight, s.pause) for s in rollout.steps] == [(10, 300), (50, 300), (100, 0)]
        assert (rollout.analysis.interval, rollout.analysis.count, rollout.analysis.failure_limit) == (30, 4, 1)
        assert rollout.tolerances.p99_latency_ratio == 1.5 and rollout.tolerances.accuracy_drop == 0.05
        assert rollout.tolerances.error_ratio == Rollout().tolerances.error_ratio  # the rest keep defaults

    @pytest.mark.parametrize(
        ("rollout", "message"),
        [
            ("mode: blue_green", r"models\.0\.rollout\.mode"),
            ("steps: []", r"rollout\.steps: .*at least 1"),
            ("steps: [{weight: 50}, {weight: 10}, {weight: 100}]", r"must rise from step to step; got \[50\.0, 10\.0"),
            ("steps: [{weight: 10}, {weight: 10}, {weight: 100}]", "must rise"),
            ("steps: [{weight: 10}, {weight: 50}]", "last step must send all traffic"),
            ("steps: [{weight: 0}, {weight: 100}]", r"rollout\.steps\.0\.weight"),
            ("steps: [{weight: 150}]", r"rollout\.steps\.0\.weight"),
            ("steps: [{weight: 10, pause: soon}, {weight: 100}]", r"rollout\.steps\.0\.pause: .*'soon'"),
            ("steps: [{weight: 10, wait: 5m}, {weight: 100}]", r"rollout\.steps\.0\.wait: Extra inputs"),
            ("analysis: {interval: 0}", r"rollout\.analysis\.interval: .*more than 0 seconds"),
            ("analysis: {count: 0}", r"rollout\.analysis\.count"),
            ("tolerances: {p99_latency_ratio: 0.9}", r"rollout\.tolerances\.p99_latency_ratio"),
            ("tolerances: {class_distance: 0}", r"rollout\.tolerances\.class_distance"),
            ("shadow: {duration: -1}", r"rollout\.shadow\.duration"),
        ],
    )
    def test_a_bad_plan_names_the_field(self, tmp_path: Path, rollout: str, message: str) -> None:
        with pytest.raises(ModelsFileError, match=message):
            _load(tmp_path, f"    rollout:\n      {rollout}\n")

    def test_the_canary_model_name_is_reserved(self, tmp_path: Path) -> None:
        path = tmp_path / "models.yaml"
        path.write_text(ENTRY + ENTRY.split("models:\n")[1].replace("name: textclf", "name: textclf__canary"))
        with pytest.raises(ModelsFileError, match=r"textclf__canary \(used by textclf\)"):
            load_models_file(path)
