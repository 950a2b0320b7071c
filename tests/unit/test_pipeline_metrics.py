from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pitcrew.pipeline_metrics import record


def _samples(path: Path) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class TestRecord:
    def test_counts_accumulate_across_calls(self, tmp_path: Path) -> None:
        record(
            tmp_path,
            "textclf",
            outcome="deployed",
            training_seconds=12.5,
            device="cpu",
            alert_to_deploy_s=300,
        )
        record(tmp_path, "textclf", outcome="no_drift")
        record(tmp_path, "textclf", outcome="rolled_back", rollback=True, training_seconds=2.5, device="cpu")
        samples = _samples(tmp_path / "pipeline_textclf.prom")
        assert samples[("pitcrew_pipeline_runs_total", (("model", "textclf"), ("outcome", "deployed")))] == 1
        assert samples[("pitcrew_pipeline_runs_total", (("model", "textclf"), ("outcome", "no_drift")))] == 1
        assert samples[("pitcrew_pipeline_runs_total", (("model", "textclf"), ("outcome", "failed")))] == 0
        assert samples[("pitcrew_rollbacks_total", (("model", "textclf"),))] == 1
        assert (
            samples[("pitcrew_training_device_seconds_total", (("device", "cpu"), ("model", "textclf")))]
            == 15.0
        )
        assert samples[("pitcrew_alert_to_deploy_seconds", (("model", "textclf"),))] == 300
        assert samples[("pitcrew_pipeline_last_success_timestamp_seconds", (("model", "textclf"),))] > 0
        assert (
            samples[("pitcrew_approval_wait_seconds", (("model", "textclf"),))] == 0
        )  # exported before first value

    def test_models_are_separate_files(self, tmp_path: Path) -> None:
        record(tmp_path, "a", outcome="failed")
        record(tmp_path, "b", outcome="deployed")
        assert ("pitcrew_pipeline_runs_total", (("model", "a"), ("outcome", "failed"))) in _samples(
            tmp_path / "pipeline_a.prom"
        )
        assert 'model="a"' not in (tmp_path / "pipeline_b.prom").read_text()

    def test_concurrent_writers_lose_nothing(self, tmp_path: Path) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: record(tmp_path, "m", outcome="failed"), range(40)))
        samples = _samples(tmp_path / "pipeline_m.prom")
        assert samples[("pitcrew_pipeline_runs_total", (("model", "m"), ("outcome", "failed")))] == 40

    def test_unknown_outcome(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="unknown run outcome 'great'"):
            record(tmp_path, "m", outcome="great")
