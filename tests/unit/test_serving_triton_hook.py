from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("airflow.sdk", reason="the Triton hook needs Airflow")

from operators.triton_hook import TritonHook  # noqa: E402
from pitcrew.settings import get_settings  # noqa: E402
from tests.stack_fixtures import free_ports  # noqa: E402


class TestTritonHook:
    def test_declares_connection_type(self):
        assert (TritonHook.conn_type, TritonHook.default_conn_name) == ("triton", "triton_default")

    def test_parse_connection_strips_scheme_and_reads_extras(self):
        params = TritonHook.parse_connection(
            "http://triton.internal/ignored",
            8000,
            {"repository": "/models", "retries": "5", "lock_timeout_s": "30"},
        )
        assert params == {
            "url": "triton.internal:8000",
            "repository": Path("/models"),
            "retries": 5,
            "lock_timeout_s": 30.0,
        }

    def test_parse_connection_defaults_from_settings(self):
        settings = get_settings()
        params = TritonHook.parse_connection(None, None, {})
        assert params["url"] == settings.triton_http_url
        assert params["repository"] == settings.repository_dir

    def test_test_connection_reports_unreachable(self):
        hook = TritonHook()
        hook.params = TritonHook.parse_connection("127.0.0.1", free_ports(1)[0], {"retries": 1})
        ok, message = hook.test_connection()
        assert not ok and "unreachable" in message
