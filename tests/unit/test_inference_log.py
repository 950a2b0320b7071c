from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from monitoring.inference_log import (
    InferenceLogWriter,
    InferenceRecord,
    read_feedback,
    read_inference_log,
    write_feedback,
)

DAY = datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)


def record(i: int, ts: datetime, label: str = "billing") -> InferenceRecord:
    return InferenceRecord(f"r{i}", ts.timestamp(), "textclf", "2", f"text {i}", label, 0.5 + i / 100)


class TestWriter:
    def test_flush_writes_date_partitions(self, tmp_path):
        writer = InferenceLogWriter(tmp_path / "log", flush_interval_s=60)
        writer.append([record(0, DAY), record(1, DAY + timedelta(minutes=2))])
        assert writer.pending() == 2
        assert writer.flush() == 2
        writer.close()
        partitions = sorted(p.name for p in (tmp_path / "log").iterdir())
        assert partitions == ["date=2026-03-01", "date=2026-03-02"]
        table = pq.read_table(next((tmp_path / "log" / "date=2026-03-02").glob("*.parquet")))
        assert table.column("request_id").to_pylist() == ["r1"]

    def test_background_flush_within_interval(self, tmp_path):
        writer = InferenceLogWriter(tmp_path / "log", flush_interval_s=0.2)
        writer.append([record(0, DAY)])
        deadline = time.monotonic() + 5
        while writer.written_rows == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        writer.close()
        assert writer.written_rows == 1

    def test_close_flushes_the_rest(self, tmp_path):
        writer = InferenceLogWriter(tmp_path / "log", flush_interval_s=3600)
        writer.append([record(i, DAY) for i in range(5)])
        writer.close()
        assert writer.written_rows == 5 and writer.pending() == 0

    def test_failure_is_counted_never_raised(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("a file where a folder must go")
        failures = []
        writer = InferenceLogWriter(
            blocker / "log", flush_interval_s=3600, on_failure=lambda e, n: failures.append(n)
        )
        started = time.perf_counter()
        writer.append([record(0, DAY), record(1, DAY)])
        assert time.perf_counter() - started < 0.5  # no write on the request path (room for a loaded CI box)
        assert writer.flush() == 0
        writer.close()
        assert failures == [2] and writer.failed_rows == 2

    def test_buffer_is_bounded(self, tmp_path):
        failures = []
        writer = InferenceLogWriter(
            tmp_path / "log",
            flush_interval_s=3600,
            max_buffer_rows=3,
            on_failure=lambda e, n: failures.append(n),
        )
        writer.append([record(i, DAY) for i in range(5)])
        assert writer.pending() == 3 and failures == [2]
        writer.close()

    def test_broken_failure_callback_does_not_propagate(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("x")

        def explode(exc, rows):
            raise RuntimeError("callback bug")

        writer = InferenceLogWriter(blocker / "log", flush_interval_s=3600, on_failure=explode)
        writer.append([record(0, DAY)])
        assert writer.flush() == 0
        writer.close()

    def test_invalid_interval(self, tmp_path):
        with pytest.raises(ValueError, match="positive"):
            InferenceLogWriter(tmp_path, flush_interval_s=0)


class TestReader:
    @pytest.fixture()
    def log_root(self, tmp_path):
        writer = InferenceLogWriter(tmp_path / "log", flush_interval_s=3600)
        writer.append(
            [record(i, DAY + timedelta(minutes=i), "technical" if i % 2 else "billing") for i in range(6)]
        )
        writer.append([InferenceRecord("other", DAY.timestamp(), "othermodel", "1", "t", "x", 0.9)])
        writer.close()
        return tmp_path / "log"

    def test_window_is_half_open_and_sorted(self, log_root):
        frame = read_inference_log(
            log_root, DAY + timedelta(minutes=1), DAY + timedelta(minutes=4), model="textclf"
        )
        assert frame["request_id"].tolist() == ["r1", "r2", "r3"]
        assert frame["label"].tolist() == ["technical", "billing", "technical"]
        assert frame["feedback_label"].isna().all()

    def test_spans_date_partitions(self, log_root):
        frame = read_inference_log(log_root, DAY - timedelta(hours=1), DAY + timedelta(hours=1))
        assert len(frame) == 7 and set(frame["model"]) == {"textclf", "othermodel"}

    def test_feedback_joined_latest_wins(self, log_root, tmp_path):
        fb = tmp_path / "feedback"
        write_feedback(fb, {"r1": "account", "r2": "billing"}, timestamp=DAY)
        write_feedback(fb, {"r1": "shipping"}, timestamp=DAY + timedelta(hours=2))
        assert dict(zip(*read_feedback(fb)[["request_id", "label"]].T.values, strict=True)) == {
            "r1": "shipping",
            "r2": "billing",
        }
        frame = read_inference_log(log_root, DAY, DAY + timedelta(hours=1), feedback_root=fb, model="textclf")
        joined = dict(zip(frame["request_id"], frame["feedback_label"], strict=True))
        assert (
            joined["r1"] == "shipping" and joined["r2"] == "billing" and joined["r3"] != joined["r3"]
        )  # NaN

    def test_missing_root_is_empty(self, tmp_path):
        frame = read_inference_log(
            tmp_path / "none", DAY, DAY + timedelta(hours=1), feedback_root=tmp_path / "nofb"
        )
        assert frame.empty and {"request_id", "text", "label", "feedback_label"} <= set(frame.columns)

    def test_fsspec_uri(self):
        root = f"memory://pitcrew-test-{time.time_ns()}/log"
        writer = InferenceLogWriter(root, flush_interval_s=3600)
        writer.append([record(0, DAY)])
        writer.close()
        assert writer.written_rows == 1
        frame = read_inference_log(root, DAY - timedelta(minutes=1), DAY + timedelta(minutes=1))
        assert frame["request_id"].tolist() == ["r0"]

    @pytest.mark.parametrize(
        ("start", "end", "message"),
        [(DAY.replace(tzinfo=None), DAY, "timezone-aware"), (DAY, DAY, "empty window")],
    )
    def test_bad_window(self, tmp_path, start, end, message):
        with pytest.raises(ValueError, match=message):
            read_inference_log(tmp_path, start, end)


def test_flush_thread_runs_at_the_requested_niceness(tmp_path):
    import os

    seen = []

    class Probe(InferenceLogWriter):
        def flush(self) -> int:
            seen.append(os.getpriority(os.PRIO_PROCESS, __import__("threading").get_native_id()))
            return super().flush()

    base = os.getpriority(os.PRIO_PROCESS, 0)
    writer = Probe(tmp_path / "log", flush_interval_s=0.05, niceness=min(base + 5, 19))
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.close()
    assert seen[0] == min(base + 5, 19)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the caller's own priority is untouched
