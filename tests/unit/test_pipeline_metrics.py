from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pitcrew.pipeline_metrics import approval_answered, approval_waiting, record


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

    def test_trigger_stamps_the_last_run_of_that_trigger(self, tmp_path: Path) -> None:
        record(tmp_path, "m", outcome="failed", trigger="schedule")
        record(tmp_path, "m", outcome="no_drift", trigger="alert")
        samples = _samples(tmp_path / "pipeline_m.prom")
        schedule = samples[
            ("pitcrew_pipeline_last_run_timestamp_seconds", (("model", "m"), ("trigger", "schedule")))
        ]
        alert = samples[
            ("pitcrew_pipeline_last_run_timestamp_seconds", (("model", "m"), ("trigger", "alert")))
        ]
        assert 0 < schedule <= alert
        # A trigger that never ran has no series (an absent nightly must not look like one from 1970).
        assert not [
            key for key in samples if key[0].startswith("pitcrew_pipeline_last_run") and "manual" in str(key)
        ]

    def test_callers_without_trigger_keep_working(self, tmp_path: Path) -> None:
        state = record(tmp_path, "m", outcome="deployed")
        assert state["last_run_timestamp_seconds"] == {}
        assert (
            "# TYPE pitcrew_pipeline_last_run_timestamp_seconds gauge"
            in (tmp_path / "pipeline_m.prom").read_text()
        )

    def test_unknown_trigger(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="unknown run trigger 'cron'"):
            record(tmp_path, "m", trigger="cron")

    def test_state_of_an_older_version_gains_the_new_keys(self, tmp_path: Path) -> None:
        record(tmp_path, "m", outcome="failed")
        state_path = tmp_path / "state" / "m.json"
        old = json.loads(state_path.read_text())
        del old["last_run_timestamp_seconds"], old["approvals_pending"]
        state_path.write_text(json.dumps(old))
        state = record(tmp_path, "m", outcome="failed", trigger="manual")
        assert state["runs"]["failed"] == 2 and set(state["last_run_timestamp_seconds"]) == {"manual"}


class TestApprovals:
    RUN = "alert__m__abc__2026-12-01T00:00:00"

    def _pending(self, path: Path) -> dict[str, tuple[float, float]]:
        samples = _samples(path / "pipeline_m.prom")
        since = {
            dict(k[1])["run_id"]: v
            for k, v in samples.items()
            if k[0] == "pitcrew_approval_pending_since_timestamp_seconds"
        }
        timeout = {
            dict(k[1])["run_id"]: v for k, v in samples.items() if k[0] == "pitcrew_approval_timeout_seconds"
        }
        assert set(since) == set(timeout)
        return {run: (since[run], timeout[run]) for run in since}

    def test_waiting_exports_since_and_timeout_per_run(self, tmp_path: Path) -> None:
        approval_waiting(tmp_path, "m", self.RUN, timeout_s=86400, since=1_000.0)
        approval_waiting(tmp_path, "m", "manual__2", timeout_s=3600)
        pending = self._pending(tmp_path)
        assert pending[self.RUN] == (1_000.0, 86400.0)
        assert pending["manual__2"][0] > 1_000 and pending["manual__2"][1] == 3600
        keys = [
            k for k in _samples(tmp_path / "pipeline_m.prom") if k[0] == "pitcrew_approval_timeout_seconds"
        ]
        assert sorted(dict(labels)["run_id"] for _, labels in keys) == sorted(["manual__2", self.RUN])
        assert all(set(dict(labels)) == {"model", "run_id"} for _, labels in keys)

    def test_answered_removes_the_run_only(self, tmp_path: Path) -> None:
        approval_waiting(tmp_path, "m", self.RUN, timeout_s=60, since=5.0)
        approval_waiting(tmp_path, "m", "other", timeout_s=60, since=6.0)
        approval_answered(tmp_path, "m", self.RUN)
        assert self._pending(tmp_path) == {"other": (6.0, 60.0)}
        approval_answered(tmp_path, "m", "never-asked")  # no error, nothing changes
        approval_answered(tmp_path, "m", "other")
        assert self._pending(tmp_path) == {}
        text = (tmp_path / "pipeline_m.prom").read_text()
        assert "# TYPE pitcrew_approval_pending_since_timestamp_seconds gauge" in text

    def test_a_retried_task_keeps_the_first_since(self, tmp_path: Path) -> None:
        approval_waiting(tmp_path, "m", self.RUN, timeout_s=60, since=100.0)
        approval_waiting(tmp_path, "m", self.RUN, timeout_s=60, since=200.0)
        assert self._pending(tmp_path) == {self.RUN: (100.0, 60.0)}

    def test_the_end_of_the_run_drops_an_approval_left_pending(self, tmp_path: Path) -> None:
        approval_waiting(tmp_path, "m", self.RUN, timeout_s=60, since=1.0)
        record(tmp_path, "m", outcome="failed", run_id=self.RUN, trigger="alert")
        assert self._pending(tmp_path) == {}

    def test_pending_survives_other_events_and_counts_are_kept(self, tmp_path: Path) -> None:
        record(tmp_path, "m", outcome="deployed")
        approval_waiting(tmp_path, "m", self.RUN, timeout_s=60, since=1.0)
        record(tmp_path, "m", rollback=True)
        samples = _samples(tmp_path / "pipeline_m.prom")
        assert samples[("pitcrew_pipeline_runs_total", (("model", "m"), ("outcome", "deployed")))] == 1
        assert self._pending(tmp_path) == {self.RUN: (1.0, 60.0)}

    def test_timeout_must_be_positive(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="approval timeout must be positive"):
            approval_waiting(tmp_path, "m", self.RUN, timeout_s=0)
