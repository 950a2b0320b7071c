"""Webhook authentication: a bearer token and an HMAC-SHA256 signature of the body, in constant time.

Alertmanager can send a bearer token but cannot sign bodies; Grafana can do both (its webhook signing:
hex HMAC-SHA256 of the body, or of ``"<timestamp>:<body>"`` when a timestamp header is configured). So the
token is always required, a signature is verified whenever one is sent, and Grafana-format bodies must
be signed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from pitcrew.alerts.errors import AuthError

SIGNATURE_HEADER = "x-grafana-alerting-signature"
TIMESTAMP_HEADER = "x-grafana-alerting-timestamp"
#: A signed timestamp older (or newer) than this is a replay; Grafana sends it at delivery time.
MAX_CLOCK_SKEW_S = 300


def sign_body(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The signature Grafana sends for ``body`` (hex), with ``timestamp`` mixed in when given."""
    message = body if timestamp is None else timestamp.encode() + b":" + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def check_bearer(authorization: str | None, token: str) -> None:
    """Accept ``Authorization: Bearer <token>`` only; compare in constant time."""
    if not token:
        # A webhook with an empty secret would accept anyone: refuse instead of failing open.
        raise AuthError("the webhook has no token configured")
    if not authorization:
        raise AuthError("missing Authorization header")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        raise AuthError("Authorization must be 'Bearer <token>'")
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise AuthError("wrong bearer token")


def check_signature(
    headers: Mapping[str, str], body: bytes, secret: str, *, required: bool, now: float | None = None
) -> bool:
    """Verify the body signature if present (or when ``required``); return whether one was verified."""
    signature = headers.get(SIGNATURE_HEADER)
    if signature is None:
        if required:
            raise AuthError(f"missing {SIGNATURE_HEADER} header")
        return False
    if not secret:
        raise AuthError("the webhook has no HMAC secret configured")
    timestamp = headers.get(TIMESTAMP_HEADER)
    if timestamp is not None:
        try:
            sent = float(timestamp)
        except ValueError:
            raise AuthError(f"{TIMESTAMP_HEADER} is not a Unix timestamp") from None
        current = time.time() if now is None else now
        if abs(current - sent) > MAX_CLOCK_SKEW_S:
            raise AuthError(f"{TIMESTAMP_HEADER} is more than {MAX_CLOCK_SKEW_S}s away from now")
    expected = sign_body(secret, body, timestamp)
    if not hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
        raise AuthError("wrong body signature")
    return True
