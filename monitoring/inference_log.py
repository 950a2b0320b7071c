"""The inference log: every prediction Triton serves, as a Parquet dataset partitioned by date.

The Python backend appends rows to :class:`InferenceLogWriter`, which only buffers them in memory; a
background thread writes one Parquet file per date partition every few seconds and on ``close``. A write
failure is reported through ``on_failure`` (the backend counts it in a metric) and never reaches the
request path. :func:`read_inference_log` returns a time window as a DataFrame, joined with the feedback
labels that :func:`write_feedback` stores beside it; those joined rows are the fine-tuning data.

Any local path or pyarrow/fsspec URI (``s3://``, ``gs://``, ``memory://``) works as a root.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

#: Columns of one inference log row; ``date`` (YYYY-MM-DD, UTC) is the partition key.
LOG_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("version", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float32()),
    ]
)
#: ``timestamp`` is when pitcrew received the label (the latest per request id wins); ``labelled_at`` is
#: when the labeller says it labelled, and ``source`` who did (both optional, null in older files).
FEEDBACK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("label", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("labelled_at", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
    ]
)
_PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


class InferenceLogError(RuntimeError):
    """The inference log or feedback dataset cannot be written or read; the message names the root."""


@dataclass(frozen=True)
class InferenceRecord:
    """One served prediction."""

    request_id: str
    timestamp: float  # seconds since the epoch, UTC
    model: str
    version: str
    text: str
    label: str
    confidence: float


def resolve_filesystem(root: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or any pyarrow- or fsspec-supported URI."""
    root = str(root)
    if "://" not in root:
        return pafs.LocalFileSystem(), str(Path(root).resolve())
    try:
        return pafs.FileSystem.from_uri(root)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(root)
        except (ImportError, ValueError) as exc:
            raise InferenceLogError(f"no filesystem for inference log root {root!r}: {exc}") from exc
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _date_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def write_partitioned(
    root: str | Path, table: pa.Table, dates: Sequence[str], prefix: str = "part"
) -> list[str]:
    """Write ``table`` as one new Parquet file per date partition under ``root``; return the paths.

    Local files are written under a hidden temporary name and renamed, so readers (which skip names
    starting with ``.``) never see half a file; object stores write whole objects anyway.
    """
    fs, base = resolve_filesystem(root)
    local = isinstance(fs, pafs.LocalFileSystem)
    dates_arr = pa.array(dates, pa.string())
    written = []
    for date in sorted(set(dates)):
        part = table.filter(pc.equal(dates_arr, date))
        folder = f"{base}/date={date}"
        fs.create_dir(folder, recursive=True)
        name = f"{prefix}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        final = f"{folder}/{name}"
        target = f"{folder}/.{name}.tmp" if local else final
        with fs.open_output_stream(target) as out:
            pq.write_table(part, out)
        if local:
            fs.move(target, final)
        written.append(final)
    return written


class InferenceLogWriter:
    """Buffer rows in memory and flush them to Parquet in the background.

    :param root: dataset root (path or URI).
    :param flush_interval_s: the longest a row waits in memory before it is written.
    :param max_buffer_rows: beyond this (a store that is down for long) the oldest rows are dropped
        and reported as failures, so memory stays bounded.
    :param on_failure: called with (exception, rows lost) when a flush fails; must not raise.
    :param niceness: CPU niceness of the background flush thread (Linux niceness is per thread), so that
        writing Parquet yields the CPU to requests served by the same process; None keeps the caller's.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        flush_interval_s: float = 2.0,
        max_buffer_rows: int = 100_000,
        on_failure: Callable[[Exception, int], None] | None = None,
        niceness: int | None = None,
    ) -> None:
        if flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be positive, got {flush_interval_s}")
        self.root = str(root)
        self.flush_interval_s = flush_interval_s
        self.max_buffer_rows = max_buffer_rows
        self.on_failure = on_failure
        self.niceness = niceness
        self.failed_rows = 0
        self.written_rows = 0
        self._rows: list[InferenceRecord] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-log-flush", daemon=True)
        self._thread.start()

    def append(self, records: Iterable[InferenceRecord]) -> None:
        """Queue rows; O(rows), no I/O, never raises for a storage problem."""
        dropped = 0
        with self._lock:
            self._rows.extend(records)
            overflow = len(self._rows) - self.max_buffer_rows
            if overflow > 0:
                del self._rows[:overflow]
                dropped = overflow
        if dropped:
            self._fail(InferenceLogError(f"inference log buffer full; dropped {dropped} rows"), dropped)

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write every buffered row now; return how many were written (0 on failure, which is reported)."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                table = pa.Table.from_pydict(
                    {
                        "request_id": [r.request_id for r in rows],
                        "timestamp": [int(r.timestamp * 1_000_000) for r in rows],
                        "model": [r.model for r in rows],
                        "version": [r.version for r in rows],
                        "text": [r.text for r in rows],
                        "label": [r.label for r in rows],
                        "confidence": [float(r.confidence) for r in rows],
                    },
                    schema=LOG_SCHEMA,
                )
                write_partitioned(self.root, table, [_date_of(r.timestamp) for r in rows])
            except Exception as exc:  # any storage error: count it, never propagate to requests
                self._fail(exc, len(rows))
                return 0
            self.written_rows += len(rows)
            return len(rows)

    def close(self) -> None:
        """Stop the background thread and write what is left (called from the backend's ``finalize``)."""
        self._stop.set()
        self._thread.join(timeout=self.flush_interval_s + 5)
        self.flush()

    def _run(self) -> None:
        if self.niceness is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.niceness)
            except OSError as exc:  # not permitted here: flush at the caller's priority
                log.debug("inference log: cannot set niceness %s: %s", self.niceness, exc)
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def _fail(self, exc: Exception, rows: int) -> None:
        self.failed_rows += rows
        log.warning("inference log %s: %d rows lost: %s", self.root, rows, exc)
        if self.on_failure is not None:
            try:
                self.on_failure(exc, rows)
            except Exception:  # a broken callback must not break logging either
                log.exception("inference log failure callback raised")


def write_feedback(
    root: str | Path,
    labels: Mapping[str, str],
    *,
    timestamp: datetime | None = None,
    labelled_at: Mapping[str, datetime | None] | None = None,
    sources: Mapping[str, str | None] | None = None,
) -> int:
    """Store true labels for served requests (request id -> label) as one new file; a later label wins.

    :param timestamp: when the labels were received (default now); it orders relabels.
    :param labelled_at: per request id, when the labeller labelled (optional).
    :param sources: per request id, who labelled (optional).
    """
    if not labels:
        return 0
    when = timestamp or datetime.now(UTC)
    labelled_at = labelled_at or {}
    sources = sources or {}
    ids = list(labels)
    table = pa.Table.from_pydict(
        {
            "request_id": ids,
            "label": [labels[i] for i in ids],
            "timestamp": [when] * len(ids),
            "labelled_at": [labelled_at.get(i) for i in ids],
            "source": [sources.get(i) for i in ids],
        },
        schema=FEEDBACK_SCHEMA,
    )
    write_partitioned(root, table, [when.astimezone(UTC).strftime("%Y-%m-%d")] * len(ids), prefix="feedback")
    return len(ids)


def _read(root: str | Path, schema: pa.Schema, filter_: ds.Expression | None) -> pa.Table:
    fs, base = resolve_filesystem(root)
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return schema.empty_table()
    # The schema is given, not inferred from one file: columns added later (feedback's labelled_at and
    # source) read as null from files written before they existed.
    full = schema.append(pa.field("date", pa.string()))
    try:
        dataset = ds.dataset(base, filesystem=fs, format="parquet", partitioning=_PARTITIONING, schema=full)
        table = dataset.to_table(filter=filter_)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InferenceLogError(f"cannot read dataset at {root}: {exc}") from exc
    return table.select(schema.names) if table.num_rows else schema.empty_table()


def read_feedback(root: str | Path) -> pd.DataFrame:
    """All feedback labels, the latest per request id, as columns request_id, label, timestamp."""
    frame = _read(root, FEEDBACK_SCHEMA, None).to_pandas()
    frame = frame.sort_values("timestamp").drop_duplicates("request_id", keep="last")
    return frame.reset_index(drop=True)


def lookup_requests(
    root: str | Path, request_ids: Sequence[str], *, since: datetime, model: str | None = None
) -> pd.DataFrame:
    """The logged rows of ``request_ids`` served since ``since`` (request_id, timestamp, version, label).

    Only the date partitions from ``since`` on are read, so a lookup costs the recent log, not all of it.
    """
    if since.tzinfo is None:
        raise ValueError("since must be a timezone-aware datetime (UTC)")
    if not request_ids:
        return LOG_SCHEMA.empty_table().to_pandas()[["request_id", "timestamp", "version", "label"]]
    first_day = since.astimezone(UTC).strftime("%Y-%m-%d")
    filter_ = (ds.field("date") >= first_day) & ds.field("request_id").isin(list(request_ids))
    if model is not None:
        filter_ &= ds.field("model") == model
    frame = _read(root, LOG_SCHEMA, filter_).to_pandas()[["request_id", "timestamp", "version", "label"]]
    since_ts = pd.Timestamp(since).tz_convert("UTC")
    frame = frame[frame["timestamp"] >= since_ts].sort_values("timestamp", kind="stable")
    return frame.drop_duplicates("request_id", keep="last").reset_index(drop=True)


def read_inference_log(
    root: str | Path,
    start: datetime,
    end: datetime,
    *,
    feedback_root: str | Path | None = None,
    model: str | None = None,
) -> pd.DataFrame:
    """Rows with ``start <= timestamp < end`` (UTC), oldest first, with a ``feedback_label`` column.

    :param feedback_root: where :func:`write_feedback` stored labels; rows without one get NA.
    :param model: keep only this model's rows.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes (UTC)")
    if end <= start:
        raise ValueError(f"empty window: end {end.isoformat()} is not after start {start.isoformat()}")
    days = [
        (start + timedelta(days=i)).astimezone(UTC).strftime("%Y-%m-%d")
        for i in range((end - start).days + 2)
    ]
    ts = pa.scalar(start, pa.timestamp("us", tz="UTC")), pa.scalar(end, pa.timestamp("us", tz="UTC"))
    filter_ = ds.field("date").isin(days) & (ds.field("timestamp") >= ts[0]) & (ds.field("timestamp") < ts[1])
    if model is not None:
        filter_ &= ds.field("model") == model
    frame = _read(root, LOG_SCHEMA, filter_).to_pandas()
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    if feedback_root is None:
        frame["feedback_label"] = pd.Series([pd.NA] * len(frame), dtype="object")
        return frame
    feedback = read_feedback(feedback_root)[["request_id", "label"]].rename(
        columns={"label": "feedback_label"}
    )
    return frame.merge(feedback, on="request_id", how="left")
