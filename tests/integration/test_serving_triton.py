"""The serving contract against the real bundled Triton and the real Prometheus.

One Triton + Prometheus pair for the module; versions are swapped in with the real CLI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
import yaml
from tritonclient.utils import InferenceServerException

from monitoring.inference_log import read_inference_log, write_feedback
from pitcrew.cli import main as pitcrew_main
from pitcrew.serving.client import TritonControl
from pitcrew.settings import get_settings
from tests.integration.serving_artifacts import build_artifact
from tests.integration.serving_traffic import Traffic
from tests.stack_fixtures import free_ports, make_settings, stack_with_env

pytestmark = pytest.mark.integration
LABELS = ["billing", "technical", "account", "shipping"]
MODEL = "textclf"
COMPILED_MODEL = "textclf_compiled"
CALIBRATION = {"method": "temperature", "temperature": 0.01, "fitted_on": "test", "rows": 1,
               "nll_before": 1.0, "nll_after": 1.0, "ece_before": 0.0, "ece_after": 0.0,
               "atc_threshold": 0.26}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    artifacts = {v: build_artifact(root / f"artifact-v{v}", LABELS, seed=v) for v in (1, 2)}
    # the random tiny model answers ~0.25 for every class: only a small T moves its confidence visibly
    (artifacts[1] / "calibration.json").write_text(json.dumps(CALIBRATION))
    broken = root / "artifact-broken"
    shutil.copytree(artifacts[1], broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    models_file = root / "models.yaml"
    entry = {
        "name": MODEL,
        "train_data": str(root / "train.parquet"),
        "inference_log": str(root / "inference_log"),
        "feedback": str(root / "feedback"),
        "labels": LABELS,
        "thresholds": {"latency_p95_budget_ms": 500},
    }
    # The compiled-artifact test deploys its own model: version 1 of textclf keeps serving whatever the order
    compiled = {**entry, "name": COMPILED_MODEL, "inference_log": str(root / "inference_log_compiled"),
                "feedback": str(root / "feedback_compiled")}
    models_file.write_text(yaml.safe_dump({"models": [entry, compiled]}))
    settings = make_settings(root / "home", models_file=models_file)
    with stack_with_env(settings, only=("triton", "prometheus")):
        assert pitcrew_main(["deploy", "--model", MODEL, "--version", "1", "--artifact", str(artifacts[1])]) == 0
        yield {"settings": settings, "artifacts": artifacts, "broken": broken, "root": root, "entry": entry}


@pytest.fixture(scope="module")
def client(stack) -> TritonControl:
    return TritonControl(stack["settings"].triton_http_url)


def test_text_in_label_out(client):
    answers = client.classify(MODEL, ["my invoice was charged twice", "the app crashes"])
    assert [a.version for a in answers] == ["1", "1"]
    for answer in answers:
        assert answer.label in LABELS
        assert len(answer.probabilities) == len(LABELS)
        assert sum(answer.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert answer.label == LABELS[int(np.argmax(answer.probabilities))]


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([""], "text is empty"),
        ([b"\xff\xfeabc"], "not valid UTF-8"),
        (["ok"] * 65, "batch-size must be <= 64"),
    ],
)
def test_bad_input_gets_a_clear_error_and_the_model_keeps_serving(client, texts, message):
    with pytest.raises(InferenceServerException, match=message):
        client.classify(MODEL, texts)
    assert client.classify(MODEL, ["still serving"])[0].version == "1"


def test_megabyte_text_is_truncated_not_fatal(client):
    started = time.monotonic()
    answer = client.classify(MODEL, ["word " * 200_000])[0]
    assert answer.label in LABELS and time.monotonic() - started < 5


def test_custom_metrics_on_triton_and_in_prometheus(stack, client):
    client.classify(MODEL, ["where is my parcel"] * 3)
    time.sleep(1.5)  # the backend sends metrics once a second, off the request path
    text = httpx.get(stack["settings"].triton_metrics_url).text
    assert "nv_inference_request_success" in text
    for name in ("pitcrew_input_tokens", "pitcrew_unknown_token_ratio", "pitcrew_top_class_confidence"):
        assert f'{name}_bucket{{le="+Inf",model="{MODEL}",version="1"}}' in text
        assert f'{name}_count{{model="{MODEL}",version="1"}}' in text
    for label in LABELS:  # every class series exists from the start, zero or not
        assert f'pitcrew_predictions_total{{class="{label}",model="{MODEL}",version="1"}}' in text
    assert f'pitcrew_inference_log_failures_total{{model="{MODEL}",version="1"}} 0' in text
    query = f'sum(pitcrew_predictions_total{{model="{MODEL}"}})'
    deadline = time.monotonic() + 30
    value = 0.0
    while time.monotonic() < deadline:
        result = httpx.get(f"{stack['settings'].prometheus_url}/api/v1/query", params={"query": query}).json()
        if result["data"]["result"]:
            value = float(result["data"]["result"][0]["value"][1])
            if value >= 3:
                break
        time.sleep(0.5)
    assert value >= 3


def _calibrated_counters(text: str) -> dict[tuple[str, str], float]:
    """``{(version, "sum"|"count"|"confident"): value}`` of the textclf estimate counters in a scrape."""
    found = re.findall(
        rf'^pitcrew_(?:calibrated_confidence_(sum|count)|(confident)_texts_total){{model="{MODEL}",version="(\d+)"}} (\S+)$',
        text, re.M,
    )  # fmt: skip
    return {(version, kind or confident): float(value) for kind, confident, version, value in found}


def test_calibrated_confidence_counters_follow_the_artifacts_temperature(stack, client):
    url = stack["settings"].triton_metrics_url
    time.sleep(1.5)  # let what earlier requests queued reach the counters (flushed once a second)
    before = _calibrated_counters(httpx.get(url).text)
    texts = ["where is my parcel", "refund please", "the app crashes", "reset my password", "invoice twice"]
    answers = client.classify(MODEL, texts)
    version = answers[0].version
    # the published version folder carries the artifact's calibration.json (version 1's has T = 0.01)
    published = stack["settings"].repository_dir / MODEL / version / "calibration.json"
    if version == "1":
        assert json.loads(published.read_text()) == CALIBRATION
    temperature = json.loads(published.read_text())["temperature"] if published.exists() else 1.0
    probs = np.array([a.probabilities for a in answers], dtype=np.float64)
    scaled = np.exp(np.log(probs) / temperature)
    expected = (scaled / scaled.sum(axis=1, keepdims=True)).max(axis=1).sum()
    deadline, after = time.monotonic() + 10, {}
    while time.monotonic() < deadline:
        after = _calibrated_counters(httpx.get(url).text)
        if after.get((version, "count"), 0) - before.get((version, "count"), 0) >= len(texts):
            break
        time.sleep(0.3)
    assert after[(version, "count")] - before.get((version, "count"), 0) == len(texts)
    assert after[(version, "sum")] - before.get((version, "sum"), 0) == pytest.approx(expected, abs=1e-3)
    if temperature != 1.0:  # the counter carries calibrated confidence, not the raw top probability
        assert abs(expected - probs.max(axis=1).sum()) > 0.1
    if version == "1":  # ATC: the texts whose raw top-class confidence reaches the artifact's threshold
        confident = int(np.count_nonzero(probs.max(axis=1) >= CALIBRATION["atc_threshold"]))
        assert after.get((version, "confident"), 0) - before.get((version, "confident"), 0) == confident


def test_inference_log_rows_written_and_read_back_with_feedback(stack, client):
    request_id = f"it-{uuid.uuid4().hex}"
    started = datetime.now(UTC) - timedelta(seconds=1)
    answer = client.classify(MODEL, ["please reset my password"], request_id=request_id)[0]
    assert answer.request_id == request_id
    write_feedback(stack["entry"]["feedback"], {request_id: "account"})
    rows = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        frame = read_inference_log(
            stack["entry"]["inference_log"], started, datetime.now(UTC) + timedelta(seconds=1),
            feedback_root=stack["entry"]["feedback"], model=MODEL,
        )  # fmt: skip
        rows = frame[frame["request_id"] == request_id]
        if len(rows):
            break
        time.sleep(0.5)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["text"], row["label"], row["version"], row["feedback_label"]) == (
        "please reset my password", answer.label, "1", "account",
    )  # fmt: skip
    assert row["confidence"] == pytest.approx(max(answer.probabilities), abs=1e-6)


def test_deploy_reject_broken_and_rollback_without_failed_requests(stack, client, capsys):
    repo = stack["settings"].repository_dir
    with Traffic(stack["settings"].triton_http_url, MODEL) as traffic:
        # deploy -> verify -> commit
        assert (
            pitcrew_main(
                ["deploy", "--model", MODEL, "--version", "2", "--artifact", str(stack["artifacts"][2])]
            )
            == 0
        )
        assert '"version": 2' in capsys.readouterr().out
        assert client.classify(MODEL, ["hello"])[0].version == "2"
        assert client.ready_versions(MODEL) == [2]
        # a corrupt version is rejected before any client sees it; version 2 keeps serving; the
        # half-published version is removed, so a retry can publish it again
        assert (
            pitcrew_main(["deploy", "--model", MODEL, "--version", "3", "--artifact", str(stack["broken"])])
            == 2
        )
        err = capsys.readouterr().err
        assert "Triton refused to load textclf__staging" in err and "version 2 keeps serving" in err
        assert client.classify(MODEL, ["hello"])[0].version == "2"
        assert not (repo / MODEL / "3").exists() and not (repo / "textclf__staging").exists()
        # rollback restores the previous version (a lower number)
        assert pitcrew_main(["rollback", "--model", MODEL]) == 0
        assert '"version": 1' in capsys.readouterr().out
        assert client.classify(MODEL, ["hello"])[0].version == "1"
        assert client.ready_versions(MODEL) == [1]
    assert traffic.failures == []
    assert traffic.ok > 50 and traffic.versions == {"1", "2"}


def test_deploy_against_unreachable_triton_fails_clearly(stack, monkeypatch, capsys):
    monkeypatch.setenv("PITCREW_TRITON_HTTP_PORT", str(free_ports(1)[0]))  # nothing listens there
    get_settings.cache_clear()
    try:
        assert pitcrew_main(["rollback", "--model", MODEL]) == 2
    finally:
        monkeypatch.undo()  # back to the module's settings
        get_settings.cache_clear()
    assert "unreachable" in capsys.readouterr().err


def test_artifact_from_training_compile_deploys_and_verifies(stack, client, tmp_path, capsys):
    """The contract of docs/model-artifact.md end to end: what `python -m training compile` writes serves."""
    from training.tiny import build_tiny_model

    build_tiny_model(tmp_path / "hf", LABELS, seed=7)
    run = [sys.executable, "-m", "training"]
    subprocess.run([*run, "demo-data", "--output", str(tmp_path / "data")], check=True, capture_output=True)
    compiled = subprocess.run(
        [*run, "compile", "--model-dir", str(tmp_path / "hf"), "--output-dir", str(tmp_path / "artifact"),
         "--golden-data", str(tmp_path / "data" / "golden.parquet"), "--tensorrt", "off"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    artifact = tmp_path / "artifact"
    assert pitcrew_main(["deploy", "--model", COMPILED_MODEL, "--version", "10", "--artifact", str(artifact)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    golden = json.loads((artifact / "golden.json").read_text())
    assert result["version"] == 10 and result["verification"]["golden_texts"] == len(golden["texts"])
    assert result["verification"]["mismatched_labels"] == 0
    answers = client.classify(COMPILED_MODEL, golden["texts"][:4])
    assert [a.label for a in answers] == golden["labels"][:4] and {a.version for a in answers} == {"10"}
