from __future__ import annotations

import json
from pathlib import Path

import pytest

from pitcrew.models_file import ModelEntry
from pitcrew.serving.errors import ArtifactError, ServingError
from pitcrew.serving.factory import base_config, check_artifact_labels, make_swapper
from tests.unit.test_serving_artifact import write_artifact


def entry(**overrides) -> ModelEntry:
    values = {
        "name": "textclf",
        "train_data": "/d/train.parquet",
        "inference_log": "s3://logs/textclf",
        "feedback": "/d/feedback",
        "labels": ["a", "b"],
        "thresholds": {"latency_p95_budget_ms": 123},
    }
    return ModelEntry(**{**values, **overrides})


class TestFactory:
    def test_base_config_from_models_file_entry(self):
        config = base_config(entry())
        assert config.name == "textclf"
        assert list(config.output[1].dims) == [2]
        assert config.parameters["inference_log_uri"].string_value == "s3://logs/textclf"

    def test_swapper_uses_the_models_latency_budget(self, tmp_path):
        swapper = make_swapper(entry(), "127.0.0.1:1", tmp_path)
        assert swapper.latency_budget_ms == 123 and swapper.repository == Path(tmp_path)

    def test_runtimes_with_a_core_model_are_refused_clearly(self, tmp_path):
        with pytest.raises(ServingError, match="python-onnxruntime only; tensorrt needs the textclf_core"):
            make_swapper(entry(runtime="tensorrt"), "127.0.0.1:1", tmp_path)

    def test_artifact_labels_must_match_models_file(self, tmp_path):
        folder = write_artifact(tmp_path / "a", labels=("b", "a"))
        (folder / "golden.json").write_text(
            json.dumps({"texts": ["x"], "labels": ["a"], "probabilities": [[0.1, 0.9]]})
        )
        with pytest.raises(ArtifactError, match=r"labels \['b', 'a'\] differ"):
            check_artifact_labels(entry(), folder)
        check_artifact_labels(entry(labels=["b", "a"]), folder)
