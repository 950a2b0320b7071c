"""ServingOptions beyond names and shapes: dynamic batching, instances, and the metrics switch."""

from __future__ import annotations

import pytest

from pitcrew.serving.model_config import (
    CoreContract,
    ServingOptions,
    core_model_config,
    from_pbtxt,
    staging_config,
    text_model_config,
    to_pbtxt,
)


def test_instances_and_threads_go_into_the_config():
    config = text_model_config("m", 2, ServingOptions(instance_count=2, ort_threads=1))
    assert config.instance_group[0].count == 2
    assert config.parameters["ort_threads"].string_value == "1"
    assert list(config.dynamic_batching.preferred_batch_size) == []


def test_preferred_batch_sizes_go_into_dynamic_batching_of_front_and_not_core():
    options = ServingOptions(runtime="onnxruntime", preferred_batch_sizes=(8, 16), max_queue_delay_us=5000)
    front = text_model_config("m", 2, options)
    assert list(front.dynamic_batching.preferred_batch_size) == [8, 16]
    assert front.dynamic_batching.max_queue_delay_microseconds == 5000
    core = core_model_config("m", CoreContract("onnxruntime", ["input_ids"], "logits", 2, 64), options, standin=True)
    assert list(core.dynamic_batching.preferred_batch_size) == []


@pytest.mark.parametrize("sizes", [(0,), (65,), (8, 128)])
def test_preferred_batch_sizes_must_fit_the_max_batch(sizes):
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        ServingOptions(preferred_batch_sizes=sizes)


def test_metrics_switch_is_a_front_parameter_on_by_default():
    on = text_model_config("m", 2, ServingOptions())
    off = text_model_config("m", 2, ServingOptions(metrics=False))
    assert on.parameters["metrics"].string_value == "on"
    assert off.parameters["metrics"].string_value == "off"
    assert from_pbtxt(to_pbtxt(off)) == off


def test_staging_keeps_the_metrics_switch_and_drops_the_log():
    config = text_model_config("m", 2, ServingOptions(inference_log_uri="/log", metrics=False))
    staged = staging_config(config, 3)
    assert "inference_log_uri" not in staged.parameters
    assert staged.parameters["metrics"].string_value == "off"
