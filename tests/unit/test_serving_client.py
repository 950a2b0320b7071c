from __future__ import annotations

import time

import pytest

from pitcrew.serving.client import TritonControl
from pitcrew.serving.errors import TritonUnavailableError
from tests.stack_fixtures import free_ports


class TestTritonControl:
    def test_unreachable_server_fails_clearly_after_bounded_retries(self):
        port = free_ports(1)[0]
        client = TritonControl(f"127.0.0.1:{port}", retries=3, backoff_s=0.05)
        started = time.monotonic()
        with pytest.raises(
            TritonUnavailableError, match=rf"127.0.0.1:{port} unreachable for load m after 3 attempts"
        ):
            client.load("m")
        assert time.monotonic() - started < 5

    def test_retries_must_be_positive(self):
        with pytest.raises(ValueError):
            TritonControl("127.0.0.1:1", retries=0)
