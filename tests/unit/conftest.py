"""Fixtures and helpers shared by unit-test modules (a test module never imports another one).

Fixtures defined or imported here are visible to every test under tests/unit; the helpers (classes,
functions, constants) are imported by name: ``from tests.unit.conftest import ...``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from pitcrew.settings import REPO_ROOT

# Session fixtures of the helper modules, registered once for the whole unit suite (their heavy imports,
# torch and MLflow, happen when a test first asks for them).
from tests.unit.mlflow_fixtures import mlflow_template  # noqa: F401
from tests.unit.training_fixtures import demo_data, tiny_base, tiny_trained  # noqa: F401

if TYPE_CHECKING:  # the imports below are made where used: a light test module does not pay for them
    import pandas as pd
    from fastapi.testclient import TestClient

    from pitcrew.models_file import ModelEntry

#: The demo's four classes (training.demo_data.LABELS), spelt out for the tests that build models and data.
LABELS = ["billing", "technical", "account", "shipping"]


# ---------------------------------------------------------------------------------------------------
# A fake Prometheus HTTP API (the hook, sensors, triggers and canary operators query it)

class FakePrometheus:
    """A tiny HTTP server answering /api/v1/query from a dict of query -> (status, body) or result list.

    An answer may also be a callable returning one of those (called per query). Queries and their
    request headers are recorded in order.
    """

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.queries: list[str] = []
        self.headers: list[dict[str, str]] = []  # each query's request headers, names lowercased
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                if parsed.path == "/-/ready":
                    return self._send(200, {"status": "ready"})
                query = parse_qs(parsed.query).get("query", [""])[0]
                outer.queries.append(query)
                outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                answer = outer.answers.get(query, [])
                if callable(answer):
                    answer = answer()
                if isinstance(answer, tuple):
                    return self._send(*answer)
                self._send(200, {"status": "success", "data": {"resultType": "vector", "result": answer}})

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.close()


def sample(labels: dict[str, str], value: float) -> dict[str, Any]:
    return {"metric": labels, "value": [1700000000.0, str(value)]}



# ---------------------------------------------------------------------------------------------------
# The alert webhook app with a recording trigger (test_webhook*, test_alerts_watch, test_watch_operators)

TOKEN = "test-token"  # Alertmanager's
GRAFANA_TOKEN = "test-grafana-token"
SECRET = "test-hmac-secret"


class RecordingTrigger:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.delay_s = delay_s
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def __call__(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> str:
        if self.fail is not None:
            raise self.fail
        time.sleep(self.delay_s)
        with self._lock:
            self.calls.append((dag_id, run_id, conf))
        return run_id


def _make(tmp_path: Path, trigger: RecordingTrigger, cap: int = 1000, grafana_token: str = GRAFANA_TOKEN):
    from pitcrew.alerts.policy import AlertPolicy, Limits
    from pitcrew.alerts.routing import load_routes
    from pitcrew.alerts.service import AlertService
    from pitcrew.alerts.webhook import WebhookConfig, create_app

    service = AlertService(
        AlertPolicy(tmp_path / "state.db"),
        load_routes(REPO_ROOT / "deploy" / "alert_routes.yaml"),
        {"textclf": Limits(cooldown_s=3600, max_runs_per_day=cap)},
        trigger,
    )
    config = WebhookConfig(
        token=TOKEN, hmac_secret=SECRET, metrics_dir=tmp_path / "metrics", grafana_token=grafana_token
    )
    return create_app(lambda: config, lambda: service), service


@pytest.fixture
def trigger() -> RecordingTrigger:
    return RecordingTrigger()


@pytest.fixture
def client(tmp_path: Path, trigger: RecordingTrigger) -> TestClient:
    from fastapi.testclient import TestClient

    app, _ = _make(tmp_path, trigger)
    return TestClient(app, raise_server_exceptions=False)


def _firing(fingerprint_suffix: str = "", model: str = "textclf") -> bytes:
    from pitcrew.alerts.client import alert_entry, alertmanager_body

    return alertmanager_body(
        [alert_entry({"alertname": "TritonInferenceFailures", "model": model, "n": fingerprint_suffix})]
    )



# ---------------------------------------------------------------------------------------------------
# Serving artifacts and pipeline windows

def write_artifact(folder: Path, labels=("a", "b"), runtime="python-onnxruntime") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "labels.json").write_text(json.dumps(list(labels)))
    (folder / "serving.json").write_text(
        json.dumps({"max_length": 32, "input_names": ["input_ids", "attention_mask"], "runtime": runtime})
    )
    golden = {
        "texts": ["x", "y"],
        "labels": [labels[0], labels[1]],
        "probabilities": [[0.9, 0.1], [0.2, 0.8]],
    }
    (folder / "golden.json").write_text(json.dumps(golden))
    return folder


def _entry(tmp_path: Path, **thresholds: object) -> ModelEntry:
    from pitcrew.models_file import ModelEntry, Thresholds
    from training.demo_data import generate

    train = tmp_path / "train.parquet"
    generate(400, domain="A", seed=1).to_parquet(train, index=False)
    return ModelEntry(
        name="textclf", train_data=str(train), inference_log=str(tmp_path / "log"), feedback=str(tmp_path / "fb"),
        labels=LABELS, thresholds=Thresholds(min_window_rows=50, **thresholds),
    )  # fmt: skip


def _serve(entry: ModelEntry, frame: pd.DataFrame, *, label_fraction: float = 1.0) -> None:
    """Write what Triton's model would log, plus feedback for a share of the requests."""
    from monitoring.inference_log import InferenceLogWriter, InferenceRecord, write_feedback

    writer = InferenceLogWriter(entry.inference_log, flush_interval_s=60)
    now = time.time()
    records, feedback = [], {}
    for i, row in enumerate(frame.itertuples()):
        rid = uuid.uuid4().hex
        # The champion answers "billing" for everything: clearly not what the data says.
        records.append(InferenceRecord(rid, now - 60 + i * 0.01, entry.name, "1", row.text, "billing", 0.4))
        if i < len(frame) * label_fraction:
            feedback[rid] = row.label
    writer.append(records)
    writer.close()
    write_feedback(entry.feedback, feedback)


# ---------------------------------------------------------------------------------------------------
# model_repository/textclf/model.py outside Triton: a stand-in for ``triton_python_backend_utils``

LOGGED: list[str] = []  # what the backend logged with Logger.log_info


class _Metric:
    def __init__(self, labels, buckets=None):
        self.labels, self.value, self.observed = labels, 0.0, []

    def increment(self, n):
        self.value += n

    def set(self, v):
        self.value = v

    def observe(self, v):
        self.observed.append(v)


class _Family:
    """A metric family; its series live on it (no registry shared between instances or tests)."""

    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

    def __init__(self, name, description, kind):
        self.name = name
        self.metrics: list[_Metric] = []

    def Metric(self, labels, buckets=None):  # noqa: N802 - Triton's API name
        metric = _Metric(labels, buckets)
        self.metrics.append(metric)
        return metric


def _series(instance, name: str) -> list[_Metric]:
    """The series of family ``name`` that one backend instance created (its ``metrics.families``)."""
    return [m for family in instance.metrics.families if family.name == name for m in family.metrics]


class _Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class _Request:
    def __init__(self, texts, request_id="", parameters=None):
        self.inputs = {"text": _Tensor("text", np.array([[t] for t in texts], dtype=object))}
        self.rid = request_id
        self.params = json.dumps(parameters or {})

    def request_id(self):
        return self.rid

    def parameters(self):
        return self.params


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self.outputs = {t.name: t.array for t in output_tensors or []}
        self.error = error


#: What the stand-in's BLS reaches: model name -> a backend instance (tests register and remove them).
BLS_MODELS: dict[str, Any] = {}


class _BlsResponse:
    def __init__(self, outputs, error):
        self.outputs, self._error = outputs or {}, error

    def has_error(self):
        return self._error is not None

    def error(self):
        return types.SimpleNamespace(message=lambda: self._error)


class _BlsRequest:
    """``pb_utils.InferenceRequest``: ``exec`` runs the named instance's ``execute`` on one request."""

    def __init__(self, model_name, inputs, requested_output_names=(), parameters=None, model_version=-1,
                 request_id=""):  # fmt: skip
        self.model_name, self.inputs, self.parameters = model_name, inputs, parameters or {}
        self.model_version, self.request_id = model_version, request_id

    def exec(self):
        target = BLS_MODELS.get(self.model_name)
        if target is None:
            return _BlsResponse(None, f"Request for unknown model: '{self.model_name}' is not found")
        request = _Request([], self.request_id, self.parameters)
        request.inputs = {t.name: t for t in self.inputs}
        (response,) = target.execute([request])
        return _BlsResponse(response.outputs, response.error)


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.InferenceRequest = _BlsRequest
    module.get_output_tensor_by_name = lambda response, name: _Tensor(name, response.outputs[name])
    module.MetricFamily = _Family
    module.Tensor = _Tensor
    module.InferenceResponse = _Response
    module.TritonError = lambda message: message
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    module.Logger = types.SimpleNamespace(log_warn=lambda message: None, log_info=LOGGED.append)
    return module


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from tests.integration.serving_artifacts import build_artifact

    sys.modules["triton_python_backend_utils"] = _fake_pb_utils()
    spec = importlib.util.spec_from_file_location(
        "textclf_model", REPO_ROOT / "model_repository/textclf/model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("model_py")
    build_artifact(root / "repo" / "1", LABELS, max_length=16)
    yield module, root
    sys.modules.pop("triton_python_backend_utils", None)


def _initialized(module, root, config: dict, name: str = "textclf", version: str = "1"):
    instance = module.TritonPythonModel()
    instance.initialize(
        {
            "model_config": json.dumps(config),
            "model_name": name,
            "model_version": version,
            "model_repository": str(root / "repo"),
        }  # fmt: skip
    )
    return instance


# ---------------------------------------------------------------------------------------------------
# Alert routing: which receivers each Prometheus alert must reach (test_alert_routing_tree, test_runbooks)

#: The routing design (docs/runbooks.md, "Who is paged for what"): every rule is in exactly one class.
SERVING = {"TritonDown", "TritonInferenceFailures", "TritonHighP99Latency", "TritonNoTraffic"}
QUALITY = {"ModelLowConfidence", "ModelUnknownTokenSpike", "ModelDriftScoreHigh", "ModelAccuracyLow",
           "ModelEstimatedAccuracyLow"}  # fmt: skip
META = {"PitcrewPipelineRunFailed", "PitcrewApprovalPendingLong", "PitcrewNoSuccessfulRun",
        "PitcrewNightlyRetrainNotRunning"}  # fmt: skip

@functools.cache
def alert_labels() -> dict[str, dict[str, str]]:
    """Each alert's labels (without alertname) from the first firing case of the promtool tests."""
    import yaml

    found: dict[str, dict[str, str]] = {}
    for path in sorted((REPO_ROOT / "deploy" / "prometheus" / "tests").glob("*.yml")):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check.get("exp_alerts") or []:
                    found.setdefault(check["alertname"], {k: str(v) for k, v in alert["exp_labels"].items()})
    return found


def expected_receivers(alert: str, labels: Mapping[str, str]) -> list[str]:
    """The receivers, in the order the tree lists them, for an alert of Prometheus (not Grafana's copy)."""
    webhook = ["pitcrew"] if labels.get("model") else []
    if alert in SERVING:
        return ["pager", *webhook]
    if alert in QUALITY:
        return ["people", *webhook]
    if alert in META:
        return ["people"]
    return webhook or ["people"]
