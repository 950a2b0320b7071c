"""The FastAPI app behind ``/pitcrew`` on the Airflow API server: alerts, feedback labels, health, metrics.

Airflow's auth does not cover plugin apps, so ``POST /alerts`` and ``POST /feedback`` authenticate callers
themselves (see :mod:`pitcrew.alerts.auth`). On ``/alerts`` the bearer token names the sender: Alertmanager's
token sends Alertmanager bodies, Grafana's token sends Grafana bodies signed with a timestamp.
Feedback may have a token of its own, so a labelling system never holds the token that starts runs. Status codes are the contract the
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

from monitoring.inference_log import InferenceLogError
from pitcrew.alerts.auth import check_bearer, check_signature, identify_sender
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
from pitcrew.feedback.body import FeedbackBodyError
from pitcrew.feedback.index import IndexBusy
from pitcrew.feedback.ingest import FeedbackService, UnknownModel
from pitcrew.feedback.metrics import FeedbackCollector
from pitcrew.models_file import ModelsFileError

log = logging.getLogger(__name__)

#: Alertmanager sends at most ``max_alerts`` (50) alerts of a few hundred bytes each; 1 MiB is generous
#: and stops a caller from making the server buffer arbitrary bodies.
MAX_BODY_BYTES = 1 << 20
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class WebhookConfig:
    token: str  # Alertmanager's (and the pitcrew_watch poller's): Alertmanager-format bodies only
    hmac_secret: str
    metrics_dir: Path
    feedback_token: str = ""  # empty: feedback takes the alert webhook's token
    grafana_token: str = ""  # Grafana's: signed Grafana-format bodies only; empty: the Grafana path is closed

    def sender_tokens(self) -> dict[str, str]:
        """``sender -> token`` for :func:`~pitcrew.alerts.auth.identify_sender`."""
        # A Grafana token equal to Alertmanager's would make that one token good for both formats again;
        # the Grafana path stays closed instead, and Alertmanager's keeps working.
        grafana = "" if self.grafana_token == self.token else self.grafana_token
        return {"alertmanager": self.token, "grafana": grafana}


def _check_sender(sender: str, fmt: str, cfg: WebhookConfig) -> None:
    """Refuse a body whose format is not the one its token's sender sends (:mod:`pitcrew.alerts.auth`)."""
    if sender == fmt:
        return
    if fmt == "grafana":
        message = "a Grafana-format body needs Grafana's token, not Alertmanager's"
        if not cfg.sender_tokens()["grafana"]:
            message += "; the Grafana path is closed: no grafana_token (distinct from the webhook token) configured"
        raise AuthError(message)
    raise AuthError("Grafana's token sends Grafana-format bodies only; this one is Alertmanager-format")


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


def create_app(
    config_factory: Callable[[], WebhookConfig],
    service_factory: Callable[[], AlertService],
    feedback_factory: Callable[[], FeedbackService] | None = None,
) -> FastAPI:
    """The app; the factories run on first use (never at plugin import, which happens in every Airflow process).

    Without ``feedback_factory`` there is no ``POST /feedback`` and no feedback metrics.
    """
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

    def feedback() -> FeedbackService:
        with lock:
            if "feedback" not in cache:
                cache["feedback"] = feedback_factory()  # type: ignore[misc]
            return cache["feedback"]  # type: ignore[return-value]

    def refuse(reason: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        rejected[reason] = rejected.get(reason, 0) + 1
        log.warning("webhook refused a request (%s): %s", reason, message)
        return _error(status, message, headers)

    @app.post("/alerts")
    async def receive_alerts(request: Request) -> Response:
        cfg = config()
        try:
            sender = identify_sender(request.headers.get("authorization"), cfg.sender_tokens())
        except AuthError as exc:
            return refuse("auth", 401, str(exc), {"WWW-Authenticate": "Bearer"})
        try:
            body = await _read_body(request)
        except PayloadTooLarge as exc:
            return refuse("too_large", 413, str(exc))
        try:
            # Grafana's path needs its token and a signature; Alertmanager cannot sign (one it sends is checked).
            check_signature(request.headers, body, cfg.hmac_secret, required=sender == "grafana")
            fmt, alerts = parse_payload(body)
            _check_sender(sender, fmt, cfg)
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

    @app.post("/feedback")
    async def receive_feedback(request: Request) -> Response:
        if feedback_factory is None:
            return _error(404, "feedback is not enabled on this server")
        cfg = config()
        try:
            check_bearer(request.headers.get("authorization"), cfg.feedback_token or cfg.token)
            body = await _read_body(request)
            check_signature(request.headers, body, cfg.hmac_secret, required=False)
        except AuthError as exc:
            return refuse("feedback_auth", 401, str(exc), {"WWW-Authenticate": "Bearer"})
        except PayloadTooLarge as exc:
            return refuse("feedback_too_large", 413, str(exc))
        try:
            svc = await run_in_threadpool(feedback)
            result = await run_in_threadpool(svc.ingest, body)
        except FeedbackBodyError as exc:
            return refuse("feedback_body", exc.status, str(exc))
        except UnknownModel as exc:
            return refuse("feedback_body", 422, str(exc))
        except (IndexBusy, InferenceLogError, ModelsFileError, OSError) as exc:
            # Storage (index, dataset) or the models file failed: nothing was stored, the sender retries.
            log.error("feedback not stored: %s", exc)
            return refuse("feedback_unavailable", 503, f"feedback not stored, retry: {exc}",
                          {"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        answer = result.as_dict()
        # Every row rejected: say so in the status too, so a wholly broken batch is not mistaken for success.
        return JSONResponse(answer, status_code=422 if answer["rejected"] and not answer["accepted"] else 200)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        try:
            svc = await run_in_threadpool(service)
        except (RoutesFileError, ModelsFileError) as exc:
            return _error(503, str(exc))
        extra = []
        if feedback_factory is not None:
            fb = await run_in_threadpool(feedback)
            extra.append(FeedbackCollector(fb.models, fb.index))
        text = await run_in_threadpool(render_metrics, svc.policy, config().metrics_dir, dict(rejected), extra)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
