"""Feedback ingestion in-process: row validation, the idempotent index, the join with a real (local
Parquet) inference log, the metrics, and the HTTP contract of ``POST /feedback`` (FastAPI TestClient).

The real plugin on a real Airflow API server is covered by tests/integration/test_feedback_plugin.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from monitoring.inference_log import InferenceLogWriter, InferenceRecord, read_feedback, read_inference_log
from pitcrew.alerts.policy import AlertPolicy
from pitcrew.alerts.routing import load_routes
from pitcrew.alerts.service import AlertService
from pitcrew.alerts.webhook import MAX_BODY_BYTES, WebhookConfig, create_app
from pitcrew.feedback.body import MAX_ROWS, FeedbackBodyError, parse_body, validate_rows
from pitcrew.feedback.index import IndexBusy, LabelIndex
from pitcrew.feedback.ingest import FeedbackService, UnknownModel
from pitcrew.models_file import ModelEntry
from pitcrew.settings import REPO_ROOT

LABELS = ["billing", "technical", "account", "shipping"]
# The real clock, not a fixed date: the /metrics accuracy window is counted back from the time of the
# scrape, so requests logged against a fixed date fall out of it a day later.
NOW = datetime.now(UTC).replace(microsecond=0)
TOKEN, FEEDBACK_TOKEN = "alert-token", "feedback-token"


def _entry(tmp_path: Path, **thresholds: object) -> ModelEntry:
    return ModelEntry(
        name="textclf", train_data="t.parquet", inference_log=str(tmp_path / "log"),
        feedback=str(tmp_path / "feedback"), labels=LABELS, thresholds=thresholds,
    )  # fmt: skip


def _log(entry: ModelEntry, served: dict[str, tuple[str, str]], at: datetime = NOW - timedelta(hours=1)) -> None:
    """Log served requests: request id -> (version, predicted label)."""
    writer = InferenceLogWriter(entry.inference_log, flush_interval_s=60)
    writer.append(
        InferenceRecord(rid, at.timestamp(), entry.name, version, f"text {rid}", label, 0.9)
        for rid, (version, label) in served.items()
    )
    writer.close()
    assert writer.written_rows == len(served)


def _body(*rows: dict, model: str = "textclf") -> bytes:
    return json.dumps({"model": model, "feedback": list(rows)}).encode()


@pytest.fixture
def entry(tmp_path: Path) -> ModelEntry:
    entry = _entry(tmp_path, min_live_accuracy=0.8, accuracy_min_rows=2)
    _log(entry, {"r1": ("1", "billing"), "r2": ("1", "technical"), "r3": ("2", "account"), "r4": ("2", "shipping")})
    return entry


@pytest.fixture
def service(tmp_path: Path, entry: ModelEntry) -> FeedbackService:
    return FeedbackService({"textclf": entry}, LabelIndex(tmp_path / "index.db"))


# --- body and rows ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        (b"not json", 400, "not JSON"),
        (b"[1]", 400, "JSON object"),
        (json.dumps({"model": "textclf"}).encode(), 422, "non-empty list"),
        (json.dumps({"feedback": [{}]}).encode(), 422, "'model'"),
        (json.dumps({"model": "textclf", "feedback": [], "x": 1}).encode(), 422, "unknown field"),
        (json.dumps({"model": "m", "feedback": [{}] * (MAX_ROWS + 1)}).encode(), 422, f"at most {MAX_ROWS}"),
    ],
)
def test_a_broken_body_is_refused_whole_with_its_reason(raw: bytes, status: int, fragment: str) -> None:
    with pytest.raises(FeedbackBodyError, match=fragment) as caught:
        parse_body(raw)
    assert caught.value.status == status


def test_each_bad_row_is_rejected_alone_and_named() -> None:
    hour_ago, day_ahead = NOW - timedelta(hours=1), NOW + timedelta(days=1)
    rows = [
        {"request_id": "a", "label": "billing"},
        {"request_id": "b", "label": "refunds"},
        {"request_id": "c"},
        {"request_id": "d", "label": "billing", "labelled_at": f"{hour_ago:%Y-%m-%dT%H:%M:%S}"},  # no timezone
        {"request_id": "e", "label": "billing", "labelled_at": f"{day_ahead:%Y-%m-%dT%H:%M:%SZ}"},
        {"request_id": "a", "label": "account"},
        {"request_id": "f", "label": "billing", "colour": "red"},
        "not an object",
    ]
    batch = validate_rows("textclf", rows, LABELS, now=NOW)
    assert [i for i, _ in batch.rows] == [0]
    by_row = {r.row: r for r in batch.rejected}
    assert {i: r.reason for i, r in by_row.items()} == {
        1: "unknown_label", 2: "invalid_row", 3: "invalid_row", 4: "invalid_row", 5: "repeated_in_batch",
        6: "invalid_row", 7: "invalid_row",
    }  # fmt: skip
    assert "refunds" in by_row[1].message and "billing" in by_row[1].message
    assert by_row[2].message.startswith("label:")
    assert "timezone" in by_row[3].message
    assert "future" in by_row[4].message
    assert "row 0" in by_row[5].message
    assert by_row[7].request_id is None


# --- ingestion ----------------------------------------------------------------------------------
def test_valid_labels_join_the_training_window_and_bad_ones_do_not(
    service: FeedbackService, entry: ModelEntry
) -> None:
    result = service.ingest(
        _body(
            {"request_id": "r1", "label": "billing", "source": "agent-7",
             "labelled_at": (NOW - timedelta(minutes=30)).isoformat()},
            {"request_id": "r2", "label": "billing"},
            {"request_id": "r3", "label": "nonsense"},
            {"request_id": "nope", "label": "billing"},
        ),  # fmt: skip
        now=NOW,
    ).as_dict()
    assert (result["new"], result["relabelled"], result["duplicates"]) == (2, 0, 0)
    assert [(r["row"], r["reason"]) for r in result["rejected"]] == [(2, "unknown_label"), (3, "unknown_request")]
    window = read_inference_log(
        entry.inference_log, NOW - timedelta(hours=2), NOW, feedback_root=entry.feedback, model="textclf"
    )
    labelled = dict(window.dropna(subset=["feedback_label"])[["request_id", "feedback_label"]].values)
    assert labelled == {"r1": "billing", "r2": "billing"}
    stored = read_feedback(entry.feedback).set_index("request_id")
    assert stored.loc["r1", "source"] == "agent-7"
    assert stored.loc["r1", "labelled_at"] == NOW - timedelta(minutes=30)


def test_a_repeat_is_a_duplicate_and_a_change_is_a_relabel(service: FeedbackService, entry: ModelEntry) -> None:
    service.ingest(_body({"request_id": "r1", "label": "billing"}), now=NOW)
    again = service.ingest(_body({"request_id": "r1", "label": "billing"}), now=NOW + timedelta(minutes=1))
    assert (len(again.applied.new), len(again.applied.duplicates)) == (0, 1)
    files = sorted(Path(entry.feedback).rglob("*.parquet"))
    assert len(files) == 1, "a duplicate writes nothing"
    changed = service.ingest(_body({"request_id": "r1", "label": "account"}), now=NOW + timedelta(minutes=2))
    assert len(changed.applied.relabelled) == 1
    assert read_feedback(entry.feedback).set_index("request_id").loc["r1", "label"] == "account"
    counts = service.index.counts()
    assert counts[("textclf", "received", "new")] == 1
    assert counts[("textclf", "received", "duplicate")] == 1
    assert counts[("textclf", "received", "relabel")] == 1


def test_a_label_for_a_request_older_than_the_age_limit_is_unknown(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    _log(entry, {"old": ("1", "billing")}, at=NOW - timedelta(days=entry.feedback_max_age_days + 1))
    service = FeedbackService({"textclf": entry}, LabelIndex(tmp_path / "index.db"))
    result = service.ingest(_body({"request_id": "old", "label": "billing"}), now=NOW)
    assert [r.reason for r in result.rejected] == ["unknown_request"]
    assert f"last {entry.feedback_max_age_days} days" in result.rejected[0].message


def test_a_label_dated_before_its_request_is_rejected(service: FeedbackService) -> None:
    early = (NOW - timedelta(hours=3)).isoformat()
    result = service.ingest(_body({"request_id": "r1", "label": "billing", "labelled_at": early}), now=NOW)
    assert [r.reason for r in result.rejected] == ["invalid_row"]
    assert "before the request was served" in result.rejected[0].message


def test_an_unknown_model_is_refused(service: FeedbackService) -> None:
    with pytest.raises(UnknownModel, match="'other' is not in models.yaml"):
        service.ingest(_body({"request_id": "r1", "label": "billing"}, model="other"), now=NOW)


def test_a_failed_dataset_write_leaves_nothing_recorded(
    service: FeedbackService, entry: ModelEntry, tmp_path: Path
) -> None:
    Path(entry.feedback).parent.mkdir(parents=True, exist_ok=True)
    Path(entry.feedback).write_text("a file where the dataset folder should be")
    with pytest.raises(OSError):
        service.ingest(_body({"request_id": "r1", "label": "billing"}), now=NOW)
    assert service.index.counts() == {}
    assert service.index.accuracy("textclf", since=0) == []
    Path(entry.feedback).unlink()
    retried = service.ingest(_body({"request_id": "r1", "label": "billing"}), now=NOW)
    assert len(retried.applied.new) == 1, "the retry is new, not a duplicate of a write that never happened"


def test_a_locked_index_is_busy_not_lost(service: FeedbackService, tmp_path: Path) -> None:
    import sqlite3

    blocker = sqlite3.connect(tmp_path / "index.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    service.index.state.busy_timeout_s = 0.2
    try:
        with pytest.raises(IndexBusy, match="retry"):
            service.ingest(_body({"request_id": "r1", "label": "billing"}), now=NOW)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


# --- metrics ------------------------------------------------------------------------------------
def _families(client: TestClient) -> dict:
    text = client.get("/metrics").text
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict, family: str, sample: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {sample} {labels}")


def _app(tmp_path: Path, service: FeedbackService, feedback_token: str = FEEDBACK_TOKEN) -> TestClient:
    alerts = AlertService(AlertPolicy(tmp_path / "state.db"), load_routes(REPO_ROOT / "deploy" / "alert_routes.yaml"),
                          {}, lambda *a: "")  # fmt: skip
    config = WebhookConfig(TOKEN, "secret", tmp_path / "metrics", feedback_token=feedback_token)
    return TestClient(create_app(lambda: config, lambda: alerts, lambda: service), raise_server_exceptions=False)


def test_accuracy_lag_and_counters_per_model_and_version(tmp_path: Path, service: FeedbackService) -> None:
    client = _app(tmp_path, service)
    body = _body(
        {"request_id": "r1", "label": "billing"},  # version 1 right
        {"request_id": "r2", "label": "billing"},  # version 1 wrong
        {"request_id": "r3", "label": "account"},  # version 2 right
        {"request_id": "r4", "label": "shipping",  # version 2 right, labelled 10 minutes after serving
         "labelled_at": (NOW - timedelta(minutes=50)).isoformat()},
        {"request_id": "r5", "label": "billing"},  # not logged
    )  # fmt: skip
    service.ingest(body, now=NOW)  # received an hour after serving (the ones without labelled_at)
    families = _families(client)
    assert _value(families, "pitcrew_model_accuracy", "pitcrew_model_accuracy", version="1") == 0.5
    assert _value(families, "pitcrew_model_accuracy", "pitcrew_model_accuracy", version="2") == 1.0
    assert _value(families, "pitcrew_model_accuracy_rows", "pitcrew_model_accuracy_rows", version="2") == 2
    assert _value(families, "pitcrew_model_accuracy_threshold", "pitcrew_model_accuracy_threshold") == 0.8
    assert _value(families, "pitcrew_feedback_labels_received", "pitcrew_feedback_labels_received_total",
                  kind="new") == 4  # fmt: skip
    assert _value(families, "pitcrew_feedback_labels_rejected", "pitcrew_feedback_labels_rejected_total",
                  reason="unknown_request") == 1  # fmt: skip
    assert _value(families, "pitcrew_feedback_labels_rejected", "pitcrew_feedback_labels_rejected_total",
                  reason="unknown_label") == 0  # fmt: skip
    lag = "pitcrew_feedback_label_lag_seconds"
    assert _value(families, lag, f"{lag}_count") == 4
    assert _value(families, lag, f"{lag}_sum") == pytest.approx(3 * 3600 + 600)
    assert _value(families, lag, f"{lag}_bucket", le="600.0") == 1
    assert _value(families, lag, f"{lag}_bucket", le="3600.0") == 4
    assert _value(families, lag, f"{lag}_bucket", le="60.0") == 0


def test_the_accuracy_window_leaves_old_requests_out(tmp_path: Path) -> None:
    entry = _entry(tmp_path, accuracy_window_hours=1)
    _log(entry, {"old": ("1", "billing")}, at=datetime.now(UTC) - timedelta(hours=3))
    _log(entry, {"new": ("1", "account")}, at=datetime.now(UTC) - timedelta(minutes=5))
    service = FeedbackService({"textclf": entry}, LabelIndex(tmp_path / "index.db"))
    service.ingest(_body({"request_id": "old", "label": "billing"}, {"request_id": "new", "label": "billing"}))
    families = _families(_app(tmp_path, service))
    assert _value(families, "pitcrew_model_accuracy_rows", "pitcrew_model_accuracy_rows", version="1") == 1
    assert _value(families, "pitcrew_model_accuracy", "pitcrew_model_accuracy", version="1") == 0.0
    assert not [s for s in families["pitcrew_model_accuracy_threshold"].samples], "no min_live_accuracy: no threshold"


# --- the HTTP contract --------------------------------------------------------------------------
def test_feedback_takes_its_own_token_and_not_the_alert_token(tmp_path: Path, service: FeedbackService) -> None:
    client = _app(tmp_path, service)
    body = _body({"request_id": "r1", "label": "billing"})
    assert client.post("/feedback", content=body).status_code == 401
    assert client.post("/feedback", content=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    ok = client.post("/feedback", content=body, headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}"})
    assert ok.status_code == 200 and ok.json()["new"] == 1


def test_without_a_feedback_token_the_alert_token_is_used(tmp_path: Path, service: FeedbackService) -> None:
    client = _app(tmp_path, service, feedback_token="")
    body = _body({"request_id": "r1", "label": "billing"})
    assert client.post("/feedback", content=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{", 400, "not JSON"),
        (_body({"request_id": "r1", "label": "billing"}, model="other"), 422, "not in models.yaml"),
        (_body({"request_id": "r1", "label": "refunds"}), 422, "refunds"),
        (b"x" * (MAX_BODY_BYTES + 1), 413, "limit"),
    ],
)
def test_http_status_names_the_problem(
    tmp_path: Path, service: FeedbackService, body: bytes, status: int, fragment: str
) -> None:
    client = _app(tmp_path, service)
    answer = client.post("/feedback", content=body, headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}"})
    assert answer.status_code == status
    assert fragment in answer.text
    assert service.index.accuracy("textclf", since=0) == []


def test_a_storage_failure_is_a_503_to_retry(tmp_path: Path, service: FeedbackService, entry: ModelEntry) -> None:
    Path(entry.feedback).write_text("blocks the dataset folder")
    client = _app(tmp_path, service)
    answer = client.post("/feedback", content=_body({"request_id": "r1", "label": "billing"}),
                         headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}"})  # fmt: skip
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
