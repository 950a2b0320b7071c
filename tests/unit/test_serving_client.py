from __future__ import annotations

import time

import pytest

from pitcrew.serving.client import TritonControl
from pitcrew.serving.errors import ModelLoadError, TritonUnavailableError
from tests.stack_fixtures import free_ports


class TestTritonControl:
    def test_unreachable_server_fails_clearly_after_bounded_retries(self):
        port = free_ports(1)[0]
        client = TritonControl(f"127.0.0.1:{port}", retries=3, backoff_s=0.05)
        started = time.monotonic()
        with pytest.raises(
            TritonUnavailableError, match=rf"127.0.0.1:{port} refused the connection to load m \(3 attempts\)"
        ):
            client.load("m")
        with pytest.raises(TritonUnavailableError, match=rf"127.0.0.1:{port} unreachable for repository index"):
            client.ready_versions("m")
        assert time.monotonic() - started < 5

    def test_retries_must_be_positive(self):
        with pytest.raises(ValueError):
            TritonControl("127.0.0.1:1", retries=0)


class StubHttpClient:
    """tritonclient's HTTP client as far as ``load`` uses it: the load call breaks after it was sent."""

    def __init__(self, states: list[str]) -> None:
        self.states = states  # what the repository index reports for version 2, one entry per poll
        self.load_calls = 0

    def load_model(self, model, config=None):
        self.load_calls += 1
        raise TimeoutError("timed out")

    def get_model_repository_index(self):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return [{"name": "m", "version": "2", "state": state}]


class TestLoadIsNeverSentTwice:
    def _client(self, states: list[str]) -> tuple[TritonControl, StubHttpClient]:
        client = TritonControl("127.0.0.1:1", retries=3, backoff_s=0.01, load_timeout_s=2.0)
        client.poll_s = 0.01
        stub = StubHttpClient(states)
        client._client = stub
        return client, stub

    def test_a_load_that_broke_after_sending_waits_for_readiness(self):
        client, stub = self._client(["LOADING", "LOADING", "READY"])
        client.load("m", "{}", versions=[2])
        assert stub.load_calls == 1

    def test_a_load_that_ends_unavailable_fails_without_resending(self):
        client, stub = self._client(["LOADING", "UNAVAILABLE"])
        with pytest.raises(ModelLoadError, match=r"versions \[2\] are not READY.*not sent again"):
            client.load("m", "{}", versions=[2])
        assert stub.load_calls == 1

    def test_a_load_still_loading_at_the_deadline_fails_without_resending(self):
        client, stub = self._client(["LOADING"])
        started = time.monotonic()
        with pytest.raises(ModelLoadError, match="not sent again"):
            client.load("m", "{}", versions=[2])
        assert stub.load_calls == 1 and 1.9 < time.monotonic() - started < 5
