"""The FastAPI app behind ``/pitcrew`` on the Airflow API server: the alert webhook, health and metrics.

Airflow's auth does not cover plugin apps, so ``POST /alerts`` authenticates callers itself (bearer token,
and an HMAC signature of the body; see :mod:`pitcrew.alerts.auth`). Status codes are the contract the
senders act on: 401 auth, 400/422 bad body, 413 too large, 503 retry later (Alertmanager and Grafana
retry 5xx, so an alert is not lost when Airflow's database is briefly locked); nothing but a bug is a 500.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from pitcrew.alerts.auth import check_bearer, check_signature
from pitcrew.alerts.errors import (
    AuthError,
    PayloadError,
    PayloadTooLarge,
    RoutesFileError,
    TriggerUnavailable,
)
from pitcrew.alerts.metrics import render_metrics
from pitcrew.alerts.payloads import parse_payload
from pitcrew.alerts.service import AlertService
from pitcrew.models_file import ModelsFileError

log = logging.getLogger(__name__)

#: Alertmanager sends at most ``max_alerts`` (50) alerts of a few hundred bytes each; 1 MiB is generous
#: and stops a caller from making the server buffer arbitrary bodies.
MAX_BODY_BYTES = 1 << 20
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class WebhookConfig:
    token: str
    hmac_secret: str
    metrics_dir: Path


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body of {declared} bytes is over the {MAX_BODY_BYTES}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body is over the {MAX_BODY_BYTES}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config_factory: Callable[[], WebhookConfig], service_factory: Callable[[], AlertService]) -> FastAPI:
    """The app; both factories run on first use (never at plugin import, which happens in every Airflow process)."""
    app = FastAPI(title="pitcrew alert webhook", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()
    cache: dict[str, object] = {}
    rejected: dict[str, int] = {}

    def config() -> WebhookConfig:
        with lock:
            if "config" not in cache:
                cache["config"] = config_factory()
            return cache["config"]  # type: ignore[return-value]

    def service() -> AlertService:
        with lock:
            if "service" not in cache:
                cache["service"] = service_factory()
            return cache["service"]  # type: ignore[return-value]

    def refuse(reason: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        rejected[reason] = rejected.get(reason, 0) + 1
        log.warning("webhook refused a request (%s): %s", reason, message)
        return _error(status, message, headers)

    @app.post("/alerts")
    async def receive_alerts(request: Request) -> Response:
        cfg = config()
        try:
            check_bearer(request.headers.get("authorization"), cfg.token)
        except AuthError as exc:
            return refuse("auth", 401, str(exc), {"WWW-Authenticate": "Bearer"})
        try:
            body = await _read_body(request)
        except PayloadTooLarge as exc:
            return refuse("too_large", 413, str(exc))
        try:
            signed = check_signature(request.headers, body, cfg.hmac_secret, required=False)
            fmt, alerts = parse_payload(body)
            if fmt == "grafana" and not signed:
                raise AuthError("Grafana payloads must be signed (configure the contact point's HMAC secret)")
        except AuthError as exc:
            return refuse("auth", 401, str(exc), {"WWW-Authenticate": "Bearer"})
        except PayloadError as exc:
            return refuse("payload", exc.status, str(exc))
        try:
            svc = await run_in_threadpool(service)
            outcomes = await run_in_threadpool(svc.handle, alerts)
        except (TriggerUnavailable, RoutesFileError, ModelsFileError) as exc:
            # A broken routing or models file too: it is fixed by an operator, and the sender must retry.
            return refuse("unavailable", 503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse(
            {
                "format": fmt,
                "alerts": [o.as_dict() for o in outcomes],
                "run_ids": [o.run_id for o in outcomes if o.run_id],
            }
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        try:
            svc = await run_in_threadpool(service)
        except (RoutesFileError, ModelsFileError) as exc:
            return _error(503, str(exc))
        text = await run_in_threadpool(render_metrics, svc.policy, config().metrics_dir, dict(rejected))
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
