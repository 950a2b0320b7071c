"""Pipeline steps on real files with the real monitoring code (no servers): window, quality, drift, split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pitcrew.pipeline import data_steps, release_steps
from pitcrew.pipeline.workspace import Workspace
from tests.unit.conftest import _entry, _serve
from training.demo_data import generate


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.for_run(tmp_path / "home", "textclf", "manual__2026-11-22T00:00:00+00:00")


class TestDataSteps:
    def test_window_quality_drift_split_on_shifted_traffic(self, tmp_path: Path, ws: Workspace) -> None:
        entry = _entry(tmp_path)
        traffic = generate(300, domain="B", seed=3)
        traffic.loc[0, "text"] = ""  # one bad row: quarantined, not dropped
        _serve(entry, traffic, label_fraction=0.8)

        window = data_steps.load_window(entry, ws, hours=1)
        assert window["rows"] == 300 and window["labelled"] == 240

        quality = data_steps.data_quality(entry, ws)
        assert quality["quarantined"] == 1 and quality["clean"] == 239
        assert pd.read_parquet(ws.quarantine)["text"].tolist() == [""]

        drift = data_steps.drift(entry, ws, metrics_dir=tmp_path / "metrics")
        assert drift["decision"] == "drift", drift["reason"]
        assert any(c["drifted"] for c in drift["columns"])
        assert "pitcrew_drift_detected" in (tmp_path / "metrics" / "drift_textclf.prom").read_text()
        assert Path(drift["report_html"]).read_text().startswith("<!")

        split = data_steps.split_for_training(entry, ws)
        distinct = pd.read_parquet(ws.labelled)["text"].nunique()
        assert split["eval_rows"] + split["new_rows"] == distinct
        assert 0 < split["replay_rows"] <= split["new_rows"] // 2
        train, evaluation = pd.read_parquet(ws.train), pd.read_parquet(ws.eval)
        assert len(train) == split["train_rows"]
        assert set(evaluation["text"]).isdisjoint(set(train["text"]))

    def test_same_domain_is_no_drift(self, tmp_path: Path, ws: Workspace) -> None:
        entry = _entry(tmp_path)
        _serve(entry, generate(300, domain="A", seed=5))
        data_steps.load_window(entry, ws, hours=1)
        data_steps.data_quality(entry, ws)
        # The served labels are all "billing" (prediction drift), so compare text only here.
        window = pd.read_parquet(ws.window)
        window["label"] = generate(300, domain="A", seed=5)["label"]
        window.to_parquet(ws.window, index=False)
        assert data_steps.drift(entry, ws)["decision"] == "no_drift"

    def test_empty_window_is_insufficient_not_no_drift(self, tmp_path: Path, ws: Workspace) -> None:
        entry = _entry(tmp_path)
        _serve(entry, generate(10, domain="B", seed=3))
        data_steps.load_window(entry, ws, hours=1)
        data_steps.data_quality(entry, ws)
        assert data_steps.drift(entry, ws)["decision"] == "insufficient_data"

    def test_too_little_feedback_to_train(self, tmp_path: Path, ws: Workspace) -> None:
        entry = _entry(tmp_path)
        _serve(entry, generate(100, domain="B", seed=3), label_fraction=0.03)
        data_steps.load_window(entry, ws, hours=1)
        data_steps.data_quality(entry, ws)
        with pytest.raises(data_steps.PipelineDataError, match="not enough feedback"):
            data_steps.split_for_training(entry, ws)


class TestReleaseSteps:
    def test_canary_queries_are_per_model_and_version(self, tmp_path: Path) -> None:
        metrics = release_steps.canary_metrics(_entry(tmp_path, canary_min_confidence=0.7), 3)
        assert [m.name for m in metrics] == ["failure_ratio", "p99_latency_seconds", "mean_confidence"]
        assert all('model="textclf",version="3"' in m.query for m in metrics)
        assert metrics[2].min_value == 0.7

    def test_canary_policy_comes_from_the_thresholds(self, tmp_path: Path) -> None:
        entry = _entry(tmp_path, canary_count=2, canary_interval_s=3, canary_initial_delay_s=7,
                       canary_failure_limit=1)  # fmt: skip
        policy = release_steps.canary_policy(entry)
        assert (policy.count, policy.interval_s, policy.initial_delay_s, policy.failure_limit) == (2, 3, 7, 1)

    def test_canary_with_no_traffic_is_inconclusive(self, tmp_path: Path) -> None:
        from pitcrew.canary import run_canary

        entry = _entry(tmp_path, canary_count=2, canary_interval_s=0)
        metrics, policy = release_steps.canary_metrics(entry, 2), release_steps.canary_policy(entry)
        assert run_canary(metrics, policy, lambda q: [], lambda s: None).phase == "inconclusive"

    def test_approval_body_shows_the_differences(self) -> None:
        body = release_steps.approval_body(
            model="textclf", version=2, champion=1,
            evaluation={"decision": "promote", "reasons": ["accuracy gain +0.30"],
                        "challenger": {"eval": {"accuracy": 0.9, "macro_f1": 0.88}, "golden": {"accuracy": 0.95}},
                        "champion": {"eval": {"accuracy": 0.6, "macro_f1": 0.5}, "golden": {"accuracy": 0.9}}},
            replay={"rows": 120, "agreement": 0.7, "confidence_shift": 0.2, "champion_mean_confidence": 0.5,
                    "challenger_mean_confidence": 0.7, "label_flips": {"billing->account": 30},
                    "compared_with": "the current champion, on the same inputs"},
            drift={"decision": "drift", "reason": "2 of 4 columns drifted: text.length, label",
                   "columns": [{"column": "text.length", "drifted": True}, {"column": "text.unknown", "drifted": True}]},
            links={"MLflow": "http://mlflow/x"}, why="alert `ModelLowConfidence` (alertmanager)",
            history=["v1 rejected (rejected by ann, 2026-12-01)"],
        )  # fmt: skip
        assert "| accuracy, new traffic hold-out | 0.600 | 0.900 |" in body
        assert "compared with the current champion, on the same inputs" in body
        # Each replay figure is its own list item, so the rendered text never runs them together.
        assert "\n- mean top-class confidence: 0.500 → 0.700 (+0.200)\n" in body
        assert "\n- label flips, champion → challenger: billing → account 30\n" in body
        assert body.count("text.length") == 1, "a column the reason names is not listed again"
        assert "drifted columns: text.unknown" in body
        assert "**Why this run:** alert `ModelLowConfidence`" in body and "- v1 rejected (rejected by ann" in body
        assert "[MLflow](http://mlflow/x)" in body and "Reject" in body and "file://" not in body

    @pytest.mark.parametrize(
        ("params", "run_type", "user", "expected"),
        [
            ({"trigger": "alert", "alert": {"name": "ModelLowConfidence", "source": "alertmanager",
                                            "starts_at": "2026-12-05T01:00:00Z"}}, "manual", None,
             "alert `ModelLowConfidence` (alertmanager, firing since 2026-12-05T01:00:00Z)"),
            ({"trigger": "schedule"}, "scheduled", None, "the nightly retrain schedule"),
            ({"trigger": "manual", "force_retrain": True}, "manual", "admin", "started by hand by admin; with force_retrain"),
        ],
    )  # fmt: skip
    def test_why_this_run_names_what_started_it(self, params, run_type, user, expected) -> None:
        assert release_steps.why_this_run(params, run_type=run_type, triggered_by=user) == expected

    def test_lineage_tags(self) -> None:
        tags = release_steps.lineage_tags(
            dag_run_id="r1", trigger="alert", alert={"name": "ModelLowConfidence", "fingerprint": "abc"},
            window={"start": "s", "end": "e"}, drift={"drift": True}, parent_version=1,
            evaluation={"decision": "promote", "comparison": {"accuracy_gain": 0.1}},
            compile_report={"versions": {"onnxruntime": "1.31.1"}, "tensorrt": {"status": "skipped: TensorRT not installed"}},
        )  # fmt: skip
        assert tags["alert_fingerprint"] == "abc" and tags["parent_version"] == "1"
        assert tags["data_window"] == "s/e"
        assert tags["compile_target"]["tensorrt"] == "skipped: TensorRT not installed"
        assert tags["compile_target"]["gpu"] is None and tags["compile_target"]["compute_capability"] is None
        assert (tags["runtime"], tags["runtime_reason"]) == ("", "")

    def test_lineage_tags_name_the_plan_and_the_served_runtime(self) -> None:
        common = dict(dag_run_id="r1", trigger="nightly", alert=None, window={}, drift=None, parent_version=None,
                      evaluation={"decision": "promote"})  # fmt: skip
        built = release_steps.lineage_tags(**common, compile_report={
            "versions": {"onnxruntime": "1.31.1"}, "runtime": "tensorrt", "runtime_reason": "",
            "tensorrt": {"status": "built", "tensorrt_version": "10.8.0.43", "gpu_name": "NVIDIA L4",
                         "compute_capability": "8.9", "plan_sha256": "ab"},
        })  # fmt: skip
        assert built["compile_target"] == {
            "onnxruntime": "1.31.1", "tensorrt": "10.8.0.43", "gpu": "NVIDIA L4", "compute_capability": "8.9",
        }  # fmt: skip
        assert (built["runtime"], built["runtime_reason"]) == ("tensorrt", "")
        reason = "tensorrt requested (auto): TensorRT parity failed on 16 rows; serving the ONNX core"
        degraded = release_steps.lineage_tags(**common, compile_report={
            "versions": {"onnxruntime": "1.31.1"}, "runtime": "onnxruntime", "runtime_reason": reason,
            "tensorrt": {"status": "failed_parity", "reason": "TensorRT parity failed on 16 rows",
                         "engine": {"tensorrt_version": "10.8.0.43", "gpu_name": "NVIDIA L4"}},
        })  # fmt: skip
        # the dropped engine's GPU is not the version's compile target
        assert degraded["compile_target"] == {
            "onnxruntime": "1.31.1", "tensorrt": "failed_parity", "gpu": None, "compute_capability": None,
        }  # fmt: skip
        assert (degraded["runtime"], degraded["runtime_reason"]) == ("onnxruntime", reason)
