"""Feedback labels through the real webhook plugin on a real Airflow API server, into the real dataset,
out as metrics that a real Prometheus scrapes and evaluates ModelAccuracyLow's expression on.

Requests are logged with the real inference-log writer (what Triton's Python backend runs), so the labels
join real log rows; Triton itself is not needed for the feedback path.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_api_client import PrometheusConnect
from prometheus_client.parser import text_string_to_metric_families

from monitoring.inference_log import InferenceLogWriter, InferenceRecord, read_inference_log
from pitcrew.alerts.webhook import MAX_BODY_BYTES
from pitcrew.cli import main as pitcrew_main
from pitcrew.settings import REPO_ROOT
from pitcrew.stack.components import webhook_token
from tests.stack_fixtures import make_settings, running_stack

pytestmark = pytest.mark.integration

LABELS = ["billing", "technical", "account", "shipping"]
SERVED = {  # request id -> what version 1 predicted
    "r1": "billing", "r2": "technical", "r3": "account", "r4": "shipping", "r5": "billing", "r6": "account",
}  # fmt: skip


def _models_file(root: Path) -> Path:
    entry = {
        "name": "textclf", "base_model": "minilm", "labels": LABELS, "schedule": None,
        "train_data": "train.parquet", "inference_log": "log", "feedback": "feedback",
        "thresholds": {"min_live_accuracy": 0.9, "accuracy_min_rows": 3},
    }  # fmt: skip
    path = root / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}))
    return path


def _metric(text: str, sample: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_feedback_in_labels_out_and_accuracy_to_prometheus(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("feedback")
    settings = make_settings(root, models_file=_models_file(root), plugins_folder=REPO_ROOT / "plugins")
    served_at = datetime.now(UTC) - timedelta(minutes=10)
    writer = InferenceLogWriter(root / "log", flush_interval_s=60)
    writer.append(InferenceRecord(rid, served_at.timestamp(), "textclf", "1", f"text {rid}", label, 0.9)
                  for rid, label in SERVED.items())  # fmt: skip
    writer.close()

    with running_stack(settings, only=("airflow", "prometheus")):
        url = f"{settings.airflow_url}/pitcrew/feedback"
        token = webhook_token(settings)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def post(rows: list, model: str = "textclf", **kw) -> httpx.Response:
            body = json.dumps({"model": model, "feedback": rows}).encode()
            return httpx.post(url, content=body, headers=kw.get("headers", headers), timeout=60)

        first = post([
            {"request_id": "r1", "label": "billing", "source": "agent-1"},  # right
            {"request_id": "r2", "label": "account"},  # wrong: relabelled below
            {"request_id": "r3", "label": "refunds"},  # not a label of the model
            {"request_id": "r99", "label": "billing"},  # never served
            {"request_id": "r1", "label": "shipping"},  # r1 twice in one batch
            {"request_id": "r4", "label": "shipping", "labelled_at": "2026-01-01T00:00:00"},  # no timezone
        ])  # fmt: skip
        assert first.status_code == 200, first.text
        answer = first.json()
        assert (answer["new"], answer["relabelled"], answer["duplicates"]) == (2, 0, 0)
        assert {r["row"]: r["reason"] for r in answer["rejected"]} == {
            2: "unknown_label", 3: "unknown_request", 4: "repeated_in_batch", 5: "invalid_row",
        }  # fmt: skip
        assert "refunds" in answer["rejected"][0]["message"]

        duplicate = post([{"request_id": "r1", "label": "billing"}]).json()
        assert (duplicate["new"], duplicate["duplicates"]) == (0, 1)
        relabel = post([{"request_id": "r2", "label": "technical"}]).json()
        assert relabel["relabelled"] == 1

        too_big = httpx.post(url, content=b"x" * (MAX_BODY_BYTES + 1), headers=headers, timeout=60)
        assert too_big.status_code == 413
        wrong_token = post([{"request_id": "r3", "label": "account"}],
                           headers={**headers, "Authorization": "Bearer nope"})  # fmt: skip
        assert wrong_token.status_code == 401
        unknown_model = post([{"request_id": "r3", "label": "account"}], model="nomodel")
        assert unknown_model.status_code == 422 and "nomodel" in unknown_model.text

        # The bulk path: a CSV through `pitcrew feedback import`, one bad row (exit 1, row numbered).
        csv = root / "labels.csv"
        csv.write_text("request_id,label,source\nr5,shipping,bulk\nr6,nonsense,bulk\n")
        token_file = settings.secrets_path / "webhook_token"
        code = pitcrew_main(["feedback", "import", "--model", "textclf", str(csv), "--url", settings.airflow_url,
                             "--token-file", str(token_file)])  # fmt: skip
        assert code == 1

        # The training window holds exactly the valid labels, relabel applied.
        window = read_inference_log(root / "log", served_at - timedelta(minutes=1), datetime.now(UTC),
                                    feedback_root=root / "feedback", model="textclf")  # fmt: skip
        labelled = dict(window.dropna(subset=["feedback_label"])[["request_id", "feedback_label"]].values)
        assert labelled == {"r1": "billing", "r2": "technical", "r5": "shipping"}

        # Metrics from the plugin: r1, r2 right, r5 wrong -> 2/3 on 3 rows, below the 0.9 threshold.
        text = httpx.get(f"{settings.airflow_url}/pitcrew/metrics", timeout=60).text
        assert _metric(text, "pitcrew_model_accuracy", model="textclf", version="1") == pytest.approx(2 / 3)
        assert _metric(text, "pitcrew_model_accuracy_rows", model="textclf", version="1") == 3
        assert _metric(text, "pitcrew_feedback_labels_received_total", model="textclf", kind="new") == 3
        assert _metric(text, "pitcrew_feedback_labels_received_total", model="textclf", kind="relabel") == 1
        assert _metric(text, "pitcrew_feedback_labels_received_total", model="textclf", kind="duplicate") == 1
        assert _metric(text, "pitcrew_feedback_labels_rejected_total", model="textclf", reason="unknown_label") == 2
        assert _metric(text, "pitcrew_feedback_label_lag_seconds_count", model="textclf") == 4

        # Prometheus scrapes them, and the alert's own expression selects the version.
        rules = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "rules" / "pitcrew.yml").read_text())
        expr = next(r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "ModelAccuracyLow")
        prometheus = PrometheusConnect(url=settings.prometheus_url)
        deadline = time.monotonic() + 90
        result: list = []
        while time.monotonic() < deadline and not result:
            result = prometheus.custom_query(expr)
            time.sleep(1)
        assert [(r["metric"]["model"], r["metric"]["version"]) for r in result] == [("textclf", "1")]
        assert float(result[0]["value"][1]) == pytest.approx(2 / 3)
