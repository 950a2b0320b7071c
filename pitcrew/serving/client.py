"""A small Triton client for the swap protocol: control calls with bounded retries, and text inference.

Only connection failures are retried (the server is restarting or not up yet); an answer from Triton,
such as a refused load, is final and raised at once. A load call is the exception: it is retried only when
the connection was refused, because a load that broke after it was sent may still be running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from typing import TypeVar

import numpy as np
import tenacity
import tritonclient.http as httpclient
from gevent import Timeout
from tritonclient.utils import InferenceServerException

from pitcrew.serving.errors import ModelLoadError, ServingError, TritonUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What a refused or broken connection looks like from geventhttpclient; these, and only these, are
#: retried. A server killed while it answers closes the connection mid-response: geventhttpclient raises
#: ``HTTPConnectionClosed``, an ``http.client.HTTPException`` and no ``OSError``.
RETRYABLE = (ConnectionError, TimeoutError, OSError, HTTPException)


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: list[float]
    version: str
    request_id: str


@dataclass(frozen=True)
class VersionStats:
    """Cumulative success counters of one version (Triton's statistics API)."""

    success_count: int
    success_ns: int
    queue_ns: int
    compute_ns: int


class TritonControl:
    """Control-plane and inference calls against one Triton HTTP endpoint.

    :param url: ``host:port`` of Triton's HTTP endpoint.
    :param retries: attempts for a call whose connection fails.
    :param load_timeout_s: how long one load call may block (Triton returns when the version is READY).
    """

    def __init__(
        self, url: str, *, retries: int = 3, backoff_s: float = 0.5, load_timeout_s: float = 600.0
    ) -> None:
        if retries < 1:
            raise ValueError("retries must be >= 1")
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.load_timeout_s = load_timeout_s
        self.poll_s = 0.2
        self._client = httpclient.InferenceServerClient(
            url, connection_timeout=5.0, network_timeout=load_timeout_s
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; retry only a failed connection, with exponential backoff (this client's one policy)."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, max=8.0),
            retry=tenacity.retry_if_exception_type(RETRYABLE),
            before_sleep=lambda state: log.warning(
                "Triton %s: %s failed (%s); attempt %d/%d",
                self.url, what, state.outcome.exception(), state.attempt_number, self.retries,
            ),  # fmt: skip
            reraise=True,
        )
        try:
            return retrying(fn)
        except RETRYABLE as exc:
            raise TritonUnavailableError(
                f"Triton at {self.url} unreachable for {what} after {self.retries} attempts: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def is_live(self) -> bool:
        return bool(self._call("health", self._client.is_server_live))

    def load(self, model: str, config_json: str | None = None, versions: Sequence[int] = ()) -> None:
        """Load (or reload) ``model``; blocks until its versions are READY; :class:`ModelLoadError` if refused.

        A load is never sent twice. Only a refused connection (nothing was sent) is retried; if the call
        breaks after it was sent (client timeout, reset), the load may still be running in Triton, so this
        waits for ``versions`` to be READY instead of sending it again (docs/design.md, "Hot-swap").
        """
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, max=8.0),
            retry=tenacity.retry_if_exception_type(ConnectionRefusedError),
            reraise=True,
        )
        try:
            retrying(lambda: self._client.load_model(model, config=config_json))
        except InferenceServerException as exc:
            raise ModelLoadError(f"Triton refused to load {model}: {exc.message()}") from exc
        except ConnectionRefusedError as exc:
            raise TritonUnavailableError(
                f"Triton at {self.url} refused the connection to load {model} ({self.retries} attempts)"
            ) from exc
        except (*RETRYABLE, Timeout) as exc:
            log.warning("Triton load of %s: %s after sending; waiting for readiness", model, exc)
            self.await_ready(model, versions, exc)

    def await_ready(self, model: str, versions: Sequence[int], cause: BaseException | None = None) -> None:
        """Wait (up to the load timeout) until every one of ``versions`` of ``model`` is READY.

        If Triton was unreachable meanwhile (it restarted), the load died with it unless the restarted
        server loads those versions itself (at start-up): anything else is :class:`TritonUnavailableError`
        at once, a transient failure, rather than a wait for a load that no longer runs.
        """
        deadline = time.monotonic() + self.load_timeout_s
        outage = False
        while True:
            try:
                states = self.version_states(model)
            except TritonUnavailableError:
                states, outage = {}, True
            else:
                if versions and all(states.get(v) == "READY" for v in versions):
                    return
                if outage and not any(states.get(v) == "LOADING" for v in versions):
                    raise TritonUnavailableError(
                        f"{model}: Triton at {self.url} went away while loading versions {list(versions)} "
                        f"({cause}); back up, it does not load them (states {states}); the load was not sent again"
                    ) from cause
            failed = [v for v in versions if states.get(v) == "UNAVAILABLE"]
            if failed or not versions or time.monotonic() >= deadline:
                raise ModelLoadError(
                    f"{model}: the load call broke ({cause}) and versions {list(versions)} are "
                    f"not READY (states {states}); it was not sent again"
                ) from cause
            time.sleep(self.poll_s)

    def version_states(self, model: str) -> dict[int, str]:
        """Each known version of ``model`` and its state (READY, LOADING, UNLOADING, UNAVAILABLE)."""
        index = self._call("repository index", self._client.get_model_repository_index)
        return {
            int(entry["version"]): str(entry.get("state", ""))
            for entry in index
            if entry.get("name") == model and str(entry.get("version", "")).isdigit()
        }

    def unload(self, model: str) -> None:
        try:
            self._call(f"unload {model}", lambda: self._client.unload_model(model))
        except InferenceServerException as exc:
            raise ServingError(f"Triton refused to unload {model}: {exc.message()}") from exc

    def ready_versions(self, model: str) -> list[int]:
        """Versions of ``model`` that are READY now, ascending."""
        return sorted(v for v, state in self.version_states(model).items() if state == "READY")

    def stats(self, model: str, version: int) -> VersionStats:
        raw = self._call("statistics", lambda: self._client.get_inference_statistics(model, str(version)))
        for entry in raw.get("model_stats", []):
            if str(entry.get("version")) == str(version):
                s = entry["inference_stats"]
                return VersionStats(
                    int(s["success"]["count"]),
                    int(s["success"]["ns"]),
                    int(s["queue"]["ns"]),
                    int(s["compute_infer"]["ns"]),
                )
        raise ServingError(f"Triton has no statistics for {model} version {version}")

    def classify(
        self, model: str, texts: Sequence[str | bytes], version: int | None = None, request_id: str = ""
    ) -> list[Prediction]:
        """Send ``texts`` as one batched request; raise ``InferenceServerException`` if Triton rejects it."""
        data = np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=object)
        inputs = [httpclient.InferInput("text", list(data.shape), "BYTES")]
        inputs[0].set_data_from_numpy(data)
        result = self._call(
            f"infer {model}",
            lambda: self._client.infer(
                model, inputs, model_version="" if version is None else str(version), request_id=request_id
            ),
        )
        labels = result.as_numpy("label").reshape(-1)
        probs = result.as_numpy("probabilities")
        versions = result.as_numpy("version").reshape(-1)
        ids = result.as_numpy("request_id").reshape(-1)
        return [
            Prediction(labels[i].decode(), probs[i].tolist(), versions[i].decode(), ids[i].decode())
            for i in range(len(labels))
        ]
