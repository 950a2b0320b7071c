"""Which failures a pitcrew task retries, and which end it at once (docs/design.md, "Retries").

A server that is unreachable or answers 5xx may be back in a minute: the task fails and Airflow retries
it with backoff (``retries`` in the DAG's default args). Anything else (bad data, a failed parity check,
a refused artifact, a 4xx) will fail the same way again, so the task fails at once with its reason and
is not retried. The retryable errors are listed here by type, never recognised from message text.

Clients retry short blips themselves, each with one policy: Triton's control client with tenacity,
MLflow and Prometheus with their own urllib3 retries. A task try therefore fails as transient only once
its client has given up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import requests
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DownstreamTasksSkipped

from pitcrew.alerts.watch import WebhookUnavailableError
from pitcrew.serving.errors import TritonUnavailableError

F = TypeVar("F", bound=Callable[..., Any])

#: MLflow reports an unreachable server and 5xx answers with these error codes (after its own retries).
MLFLOW_TRANSIENT_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR"})


class PitcrewServiceUnavailable(RuntimeError):
    """A pitcrew endpoint (the alert webhook, Prometheus) is unreachable or answered 5xx; retryable."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TritonUnavailableError,
    PitcrewServiceUnavailable,
    WebhookUnavailableError,
    requests.ConnectionError,
    requests.Timeout,
    httpx.TransportError,
    ConnectionError,
    TimeoutError,
)
#: Control flow of Airflow itself: never wrapped.
_AIRFLOW_SIGNALS = (AirflowFailException, AirflowSkipException, DownstreamTasksSkipped)


def is_transient(exc: BaseException) -> bool:
    """True when retrying later may succeed: the error is a listed transient type."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    import urllib3
    from airflow_client.client.exceptions import ApiException

    # Airflow's REST client (the approval check): a connection failure or a 5xx answer.
    if isinstance(exc, urllib3.exceptions.HTTPError) or (isinstance(exc, ApiException) and (exc.status or 0) >= 500):
        return True
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in MLFLOW_TRANSIENT_CODES


def retry_only_transient(method: F) -> F:
    """Decorate ``execute``: transient errors propagate (Airflow retries), all others fail the task for good."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except _AIRFLOW_SIGNALS:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]
