from __future__ import annotations

import json

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from pitcrew.serving.model_config import (
    CoreContract,
    ServingOptions,
    core_model_config,
    from_pbtxt,
    set_version_policy,
    staging_config,
    text_model_config,
    to_load_json,
    to_pbtxt,
)


class TestTextModelConfig:
    def test_raw_text_in_label_probabilities_version_out(self):
        config = text_model_config("textclf", 4, ServingOptions(max_batch_size=32))
        assert config.backend == "python" and config.max_batch_size == 32
        assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("text", mc.TYPE_STRING, [1])]
        outputs = {o.name: (o.data_type, list(o.dims)) for o in config.output}
        assert outputs["label"] == (mc.TYPE_STRING, [1])
        assert outputs["probabilities"] == (mc.TYPE_FP32, [4])
        assert outputs["version"] == (mc.TYPE_STRING, [1])
        assert config.HasField("dynamic_batching")
        assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU

    def test_parameters_carry_runtime_and_inference_log(self):
        options = ServingOptions(
            inference_log_uri="s3://bucket/log", inference_log_flush_s=3.5, ort_threads=2
        )
        params = text_model_config("m", 2, options).parameters
        assert params["inference_log_uri"].string_value == "s3://bucket/log"
        assert params["inference_log_flush_s"].string_value == "3.5"
        assert params["ort_threads"].string_value == "2"
        assert "core_model" not in params

    @pytest.mark.parametrize("runtime", ["onnxruntime", "tensorrt"])
    def test_backend_runtimes_call_a_core_model(self, runtime):
        options = ServingOptions(runtime=runtime, core_max_batch_size=32)
        front = text_model_config("textclf", 3, options)
        contract = CoreContract(runtime, ["input_ids", "attention_mask"], "logits", 3, 32)
        core = core_model_config("textclf", contract, options)
        assert front.parameters["core_model"].string_value == core.name == "textclf_core"
        assert front.parameters["core_max_batch_size"].string_value == "32"
        assert core.platform == {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}[runtime]
        assert [i.name for i in core.input] == ["input_ids", "attention_mask"]
        assert all(i.data_type == mc.TYPE_INT64 and list(i.dims) == [-1] for i in core.input)
        assert core.output[0].name == "logits" and list(core.output[0].dims) == [3]
        assert core.max_batch_size == 32
        gpu = core.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        assert gpu == (runtime == "tensorrt")

    def test_standin_core_has_the_same_contract_on_the_python_backend(self):
        options = ServingOptions(runtime="onnxruntime")
        contract = CoreContract("onnxruntime", ["input_ids"], "logits", 2, 16)
        real = core_model_config("m", contract, options, gpu=True)
        standin = core_model_config("m", contract, options, standin=True, gpu=True)
        assert (standin.backend, standin.platform) == ("python", "")
        assert standin.parameters["standin_for"].string_value == "onnxruntime_onnx"
        for field in ("name", "max_batch_size", "input", "output"):
            assert getattr(real, field) == getattr(standin, field)
        assert real.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        assert standin.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU

    def test_no_standin_for_a_plan(self):
        contract = CoreContract("tensorrt", ["input_ids"], "logits", 2, 32)
        with pytest.raises(ValueError, match="no stand-in"):
            core_model_config("m", contract, ServingOptions(runtime="tensorrt"), standin=True)

    def test_python_runtime_has_no_core_model(self):
        with pytest.raises(ValueError, match="no core model"):
            core_model_config("m", CoreContract("python-onnxruntime", ["input_ids"], "logits", 2, 8), ServingOptions())

    def test_staging_config_serves_one_version_under_another_name_without_log(self):
        config = text_model_config("m", 2, ServingOptions(inference_log_uri="/log"))
        staged = staging_config(config, 7)
        assert staged.name == "m__staging" and list(staged.version_policy.specific.versions) == [7]
        assert "inference_log_uri" not in staged.parameters and config.parameters["inference_log_uri"].string_value

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"runtime": "torch"}, "unknown runtime"),
            ({"max_batch_size": 0}, ">= 1"),
            ({"inference_log_flush_s": 0}, "positive"),
        ],
    )
    def test_invalid_options_rejected(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            ServingOptions(**kwargs)

    def test_one_label_rejected(self):
        with pytest.raises(ValueError, match="at least 2 labels"):
            text_model_config("m", 1, ServingOptions())


class TestSerialisation:
    def test_pbtxt_round_trip(self):
        config = text_model_config("textclf", 4, ServingOptions(inference_log_uri="/tmp/x"))
        assert from_pbtxt(to_pbtxt(config)) == config

    def test_invalid_pbtxt_names_problem(self):
        with pytest.raises(ValueError, match="invalid config.pbtxt"):
            from_pbtxt("name: textclf\nnot_a_field: 3\n")

    def test_version_policy_pins_sorted_versions_without_touching_original(self):
        config = text_model_config("textclf", 4, ServingOptions())
        pinned = set_version_policy(config, [7, 3, 7])
        assert list(pinned.version_policy.specific.versions) == [3, 7]
        assert config.version_policy.HasField("latest")
        with pytest.raises(ValueError):
            set_version_policy(config, [])

    def test_load_json_is_the_config(self):
        config = set_version_policy(text_model_config("textclf", 4, ServingOptions()), [1, 2])
        raw = json.loads(to_load_json(config))
        assert raw["name"] == "textclf" and raw["backend"] == "python"
        assert [int(v) for v in raw["version_policy"]["specific"]["versions"]] == [1, 2]
        assert raw["input"][0]["data_type"] == "TYPE_STRING"
