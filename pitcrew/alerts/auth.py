"""Webhook authentication: which sender a bearer token names, and an HMAC-SHA256 signature of the body.

Alertmanager can send a bearer token but cannot sign bodies; Grafana can do both (its webhook signing:
hex HMAC-SHA256 of ``"<timestamp>:<body>"``, the timestamp in its own header). With one token for both,
whoever held only that token could skip the HMAC check by sending an Alertmanager-format body. So each
sender has a token of its own, and the token decides the sender (:func:`identify_sender`), never the body:

* Alertmanager's token (``webhook_token``) is its whole credential, since Alertmanager cannot sign; it is
  accepted with Alertmanager-format bodies only (a signature, if one is sent, is still verified).
* Grafana's token (``grafana_token``) is accepted with Grafana-format bodies only, and only with a valid
  timestamped signature: that path needs the token *and* the HMAC secret. No Grafana token configured
  means the Grafana path is closed.

One leaked token therefore opens one path, and never the other's. Tokens are compared in constant time,
every configured one on every request. A signature must carry a timestamp within
:data:`MAX_CLOCK_SKEW_S` of now: an untimestamped signature would stay valid, and replayable, forever.
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


def _credentials(authorization: str | None) -> bytes:
    if not authorization:
        raise AuthError("missing Authorization header")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthError("Authorization must be 'Bearer <token>'")
    return credentials.strip().encode()


def check_bearer(authorization: str | None, token: str) -> None:
    """Accept ``Authorization: Bearer <token>`` only; compare in constant time."""
    if not token:
        # A webhook with an empty secret would accept anyone: refuse instead of failing open.
        raise AuthError("the webhook has no token configured")
    if not hmac.compare_digest(_credentials(authorization), token.encode()):
        raise AuthError("wrong bearer token")


def identify_sender(authorization: str | None, tokens: Mapping[str, str]) -> str:
    """The sender (a key of ``tokens``, ``sender -> token``) whose token ``Authorization: Bearer`` carries.

    An empty token never matches: that sender's path is closed. Every configured token is compared, in
    constant time, on every request, so the time taken does not tell which token a guess is close to.
    """
    configured = {sender: token for sender, token in tokens.items() if token}
    if not configured:
        raise AuthError("the webhook has no token configured")
    credentials = _credentials(authorization)
    matched = [s for s, token in configured.items() if hmac.compare_digest(credentials, token.encode())]
    if not matched:
        raise AuthError("wrong bearer token")
    if len(matched) > 1:
        # One token for two senders would let it send either format again: refuse rather than guess.
        raise AuthError(f"{' and '.join(matched)} are configured with the same token; give each its own")
    return matched[0]


def check_signature(
    headers: Mapping[str, str], body: bytes, secret: str, *, required: bool, now: float | None = None
) -> bool:
    """Verify the body signature if present (or when ``required``); return whether one was verified.

    A signature is accepted only with a timestamp within :data:`MAX_CLOCK_SKEW_S` of now.
    """
    signature = headers.get(SIGNATURE_HEADER)
    if signature is None:
        if required:
            raise AuthError(f"missing {SIGNATURE_HEADER} header")
        return False
    if not secret:
        raise AuthError("the webhook has no HMAC secret configured")
    timestamp = headers.get(TIMESTAMP_HEADER)
    if timestamp is None:
        # Signed without a timestamp, a captured request could be replayed forever (set the contact
        # point's hmacConfig.timestampHeader).
        raise AuthError(f"a signature needs the {TIMESTAMP_HEADER} header: without it, it never expires")
    try:
        sent = float(timestamp)
    except ValueError:
        raise AuthError(f"{TIMESTAMP_HEADER} is not a Unix timestamp") from None
    current = time.time() if now is None else now
    if not abs(current - sent) <= MAX_CLOCK_SKEW_S:  # `not <=` also refuses nan
        raise AuthError(f"{TIMESTAMP_HEADER} is more than {MAX_CLOCK_SKEW_S}s away from now")
    expected = sign_body(secret, body, timestamp)
    if not hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
        raise AuthError("wrong body signature")
    return True
