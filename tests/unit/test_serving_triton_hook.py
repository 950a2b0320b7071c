from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("airflow.sdk", reason="the Triton hook needs Airflow")

from operators.triton_hook import TritonHook
from pitcrew.serving.factory import TritonTarget  # noqa: E402
from pitcrew.settings import get_settings  # noqa: E402
from tests.stack_fixtures import free_ports  # noqa: E402


class TestTritonHook:
    def test_declares_connection_type(self):
        assert (TritonHook.conn_type, TritonHook.default_conn_name) == ("triton", "triton_default")

    def test_parse_connection_strips_scheme_and_reads_extras(self):
        params = TritonHook.parse_connection(
            "http://triton.internal/ignored",
            8000,
            {"repository": "/models", "retries": "5", "lock_timeout_s": "30", "core_standin": "false",
             "tensorrt_version": "10.8.0.43", "gpu": True},
        )  # fmt: skip
        assert params == {
            "url": "triton.internal:8000",
            "repository": Path("/models"),
            "retries": 5,
            "lock_timeout_s": 30.0,
            "target": TritonTarget(core_standin=False, tensorrt_version="10.8.0.43", gpu=True),
        }

    @pytest.mark.parametrize(
        ("host", "port"), [(None, 8000), ("", 8000), ("triton.internal", None), (None, None)]
    )
    def test_parse_connection_requires_host_and_port(self, host, port):
        with pytest.raises(ValueError, match="host and port"):
            TritonHook.parse_connection(host, port, {"repository": "/models"})

    def test_parse_connection_repository_and_policy_defaults(self, monkeypatch, tmp_path):
        monkeypatch.setenv("PITCREW_HOME", str(tmp_path / "home"))
        monkeypatch.delenv("PITCREW_MODEL_REPOSITORY", raising=False)
        get_settings.cache_clear()
        try:
            params = TritonHook.parse_connection("127.0.0.1", 8000, {})
        finally:
            get_settings.cache_clear()
        assert params == {
            "url": "127.0.0.1:8000",
            "repository": (tmp_path / "home" / "model_repository").resolve(),
            "retries": 3,
            "lock_timeout_s": 0.0,
            # the local stack's bundled Triton: Python backend only, no TensorRT, no GPU
            "target": TritonTarget(core_standin=True, tensorrt_version="", gpu=False),
        }

    def test_params_from_the_connection(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_TRITON_TEST", json.dumps(
            {"conn_type": "triton", "host": "127.0.0.1", "port": 8123, "extra": {"repository": "/srv/models"}}
        ))  # fmt: skip
        assert TritonHook("triton_test").params["url"] == "127.0.0.1:8123"
        assert TritonHook("triton_test").params["repository"] == Path("/srv/models")

    def test_missing_connection_is_not_replaced_by_settings(self):
        from airflow.sdk.exceptions import AirflowNotFoundException

        with pytest.raises(AirflowNotFoundException):
            TritonHook("pitcrew_no_such_triton").params  # noqa: B018

    def test_test_connection_reports_unreachable(self):
        hook = TritonHook()
        hook.params = TritonHook.parse_connection("127.0.0.1", free_ports(1)[0], {"retries": 1})
        ok, message = hook.test_connection()
        assert not ok and "unreachable" in message
