"""Trigger that polls a PromQL condition asynchronously in the triggerer, so no worker slot is held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

#: Answers worth retrying: Prometheus restarting or overloaded. A 4xx (bad query) is final.
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
RETRYABLE_ERRORS = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.TimeoutException)


def prometheus_client(params: dict[str, Any], timeout: float = 10.0) -> httpx.AsyncClient:
    """An async client for Prometheus with the connection's headers, basic auth and TLS setting
    (:meth:`PrometheusHook.connection_params`)."""
    auth = httpx.BasicAuth(*params["auth"]) if params.get("auth") else None
    return httpx.AsyncClient(
        timeout=timeout, headers=params.get("headers"), auth=auth, verify=not params.get("disable_ssl")
    )


async def query_vector(client: httpx.AsyncClient, url: str, query: str) -> list[dict[str, Any]] | None:
    """An instant query's result vector; None when Prometheus is briefly unavailable (retry later).

    :raises ValueError: Prometheus refused the query (a 4xx), or it gave no instant vector: asking
        again will not help.
    """
    try:
        response = await client.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query})
    except RETRYABLE_ERRORS:
        return None
    if response.status_code in RETRYABLE_STATUS:
        return None
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        raise ValueError(f"Prometheus rejected {query!r}: {body.get('error', response.status_code)}")
    # A scalar answer ([ts, "v"]) is never empty: taken as samples, a condition would always hold.
    if body["data"].get("resultType") != "vector":
        raise ValueError(f"{query!r} did not return an instant vector ({body['data'].get('resultType')})")
    return body["data"]["result"]


class PromQLTrigger(BaseTrigger):
    """Fire when ``query`` returns at least one sample (write the threshold into the PromQL).

    :param url: Prometheus base URL (resolved from the connection by the sensor).
    :param query: PromQL; any non-empty result is the condition met.
    :param poll_interval_s: seconds between queries.
    :param timeout_s: give up after this long, with a ``timeout`` event.
    """

    def __init__(
        self, url: str, query: str, poll_interval_s: float = 15.0, timeout_s: float = 3600.0
    ) -> None:
        super().__init__()
        self.url = url
        self.query = query
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "url": self.url,
                "query": self.query,
                "poll_interval_s": self.poll_interval_s,
                "timeout_s": self.timeout_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = time.monotonic() + self.timeout_s
        async with httpx.AsyncClient(timeout=min(30.0, max(self.poll_interval_s, 1.0))) as client:
            while True:
                try:
                    result = await query_vector(client, self.url, self.query)
                except ValueError as exc:
                    yield TriggerEvent({"status": "error", "message": str(exc), "query": self.query})
                    return
                if result:
                    yield TriggerEvent({"status": "success", "result": result, "query": self.query})
                    return
                if time.monotonic() >= deadline:
                    yield TriggerEvent(
                        {"status": "timeout", "query": self.query, "timeout_s": self.timeout_s}
                    )
                    return
                await asyncio.sleep(self.poll_interval_s)
