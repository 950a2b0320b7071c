"""The pair layout on the real bundled Triton: a Python front model calling ``<name>_core`` (the Python-backend
stand-in running the same ONNX file, as on a Triton without the ORT backend), swapped under live traffic.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from pitcrew.cli import main as pitcrew_main
from pitcrew.serving.client import TritonControl
from tests.integration.serving_artifacts import build_artifact
from tests.integration.serving_traffic import Traffic
from tests.stack_fixtures import make_settings, stack_with_env

pytestmark = pytest.mark.integration
LABELS = ["billing", "technical", "account", "shipping"]
MODEL = "textclf"
CORE = "textclf_core"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    artifacts = {
        v: build_artifact(root / f"artifact-v{v}", LABELS, seed=v, runtime="onnxruntime") for v in (1, 2, 3)
    }
    # Version 4 loads fine but answers its golden set "wrongly": verification must reject it.
    rejected = root / "artifact-rejected"
    shutil.copytree(artifacts[2], rejected)
    golden = json.loads((rejected / "golden.json").read_text())
    golden["labels"] = [LABELS[(LABELS.index(label) + 1) % len(LABELS)] for label in golden["labels"]]
    (rejected / "golden.json").write_text(json.dumps(golden))
    models_file = root / "models.yaml"
    entry = {
        "name": MODEL, "runtime": "onnxruntime", "train_data": str(root / "train.parquet"),
        "inference_log": str(root / "inference_log"), "feedback": str(root / "feedback"), "labels": LABELS,
        "thresholds": {"latency_p95_budget_ms": 500},
    }  # fmt: skip
    models_file.write_text(yaml.safe_dump({"models": [entry]}))
    settings = make_settings(root / "home", models_file=models_file)
    with stack_with_env(settings, only=("triton",)):
        yield {"settings": settings, "artifacts": artifacts, "rejected": rejected}


def deploy(version: int, artifact=None) -> int:
    argv = ["deploy", "--model", MODEL, "--version", str(version)]
    return pitcrew_main(argv + (["--artifact", str(artifact)] if artifact else []))


def test_pair_serves_swaps_rejects_unseen_and_rolls_back(stack, capsys):
    settings = stack["settings"]
    client = TritonControl(settings.triton_http_url)
    repo = settings.repository_dir
    assert deploy(1, stack["artifacts"][1]) == 0
    assert client.ready_versions(MODEL) == [1] and client.ready_versions(CORE) == [1]
    assert (repo / CORE / "1" / "model.onnx").exists() and not (repo / MODEL / "1" / "model.onnx").exists()
    first = client.classify(MODEL, ["my invoice was charged twice", "where is my parcel"])
    assert [p.version for p in first] == ["1", "1"] and all(abs(sum(p.probabilities) - 1) < 1e-5 for p in first)

    with Traffic(settings.triton_http_url, MODEL) as traffic:
        # A higher version whose verification fails: not one live request may reach it.
        assert deploy(4, stack["rejected"]) == 2
        assert "golden labels differ" in capsys.readouterr().err
        answered_before_commit = dict(traffic.answers)
        assert client.ready_versions(MODEL) == [1] and client.ready_versions(CORE) == [1]
        assert not (repo / MODEL / "4").exists() and not (repo / CORE / "4").exists()
        # A good pair: staged, verified, committed; the old core goes once the old front is gone.
        assert deploy(2, stack["artifacts"][2]) == 0
        assert client.ready_versions(MODEL) == [2] and client.ready_versions(CORE) == [2]
        # Rollback swaps the pair back the same way.
        assert pitcrew_main(["rollback", "--model", MODEL]) == 0
        assert '"version": 1' in capsys.readouterr().out
        assert client.ready_versions(MODEL) == [1] and client.ready_versions(CORE) == [1]
    assert "4" not in answered_before_commit and "4" not in traffic.answers
    assert traffic.failures == []
    assert traffic.answers["1"] > 20 and traffic.answers["2"] > 0
    assert client.classify(MODEL, ["hello"])[0].version == "1"


def test_front_version_calls_its_own_core_version(stack):
    """Front N is pinned to core N: version 3 answers exactly what artifact 3 recorded (another core would not)."""
    settings = stack["settings"]
    client = TritonControl(settings.triton_http_url)
    assert deploy(3, stack["artifacts"][3]) == 0
    golden = json.loads((stack["artifacts"][3] / "golden.json").read_text())
    answers = client.classify(MODEL, golden["texts"])
    assert [a.label for a in answers] == golden["labels"]
    diff = max(abs(a - b) for ans, want in zip(answers, golden["probabilities"], strict=True)
               for a, b in zip(ans.probabilities, want, strict=True))  # fmt: skip
    assert diff < 1e-4
