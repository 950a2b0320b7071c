from __future__ import annotations

import hashlib
import hmac

import pytest

from pitcrew.alerts.auth import (
    MAX_CLOCK_SKEW_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_bearer,
    check_signature,
    sign_body,
)
from pitcrew.alerts.errors import AuthError

BODY = b'{"version":"4"}'


class TestSignBody:
    def test_is_hex_hmac_sha256_of_body(self) -> None:
        assert sign_body("s3cret", BODY) == hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()

    def test_timestamp_is_prefixed_with_colon(self) -> None:
        expected = hmac.new(b"s3cret", b"1700000000:" + BODY, hashlib.sha256).hexdigest()
        assert sign_body("s3cret", BODY, "1700000000") == expected


class TestCheckBearer:
    def test_accepts_right_token(self) -> None:
        check_bearer("Bearer tok", "tok")
        check_bearer("bearer tok", "tok")

    @pytest.mark.parametrize("header", [None, "", "tok", "Basic dG9r", "Bearer", "Bearer tok2", "Bearer to"])
    def test_refuses_missing_or_wrong(self, header: str | None) -> None:
        with pytest.raises(AuthError):
            check_bearer(header, "tok")

    def test_empty_configured_token_fails_closed(self) -> None:
        with pytest.raises(AuthError, match="no token configured"):
            check_bearer("Bearer ", "")


class TestCheckSignature:
    def test_absent_and_not_required(self) -> None:
        assert check_signature({}, BODY, "s", required=False) is False

    def test_absent_and_required(self) -> None:
        with pytest.raises(AuthError, match="missing"):
            check_signature({}, BODY, "s", required=True)

    def test_valid_without_timestamp(self) -> None:
        assert check_signature({SIGNATURE_HEADER: sign_body("s", BODY)}, BODY, "s", required=True)

    def test_valid_with_timestamp(self) -> None:
        headers = {SIGNATURE_HEADER: sign_body("s", BODY, "1000"), TIMESTAMP_HEADER: "1000"}
        assert check_signature(headers, BODY, "s", required=True, now=1000 + MAX_CLOCK_SKEW_S - 1)

    def test_stale_timestamp_is_a_replay(self) -> None:
        headers = {SIGNATURE_HEADER: sign_body("s", BODY, "1000"), TIMESTAMP_HEADER: "1000"}
        with pytest.raises(AuthError, match="away from now"):
            check_signature(headers, BODY, "s", required=True, now=1000 + MAX_CLOCK_SKEW_S + 1)

    def test_tampered_body(self) -> None:
        with pytest.raises(AuthError, match="wrong body signature"):
            check_signature({SIGNATURE_HEADER: sign_body("s", BODY)}, BODY + b" ", "s", required=True)

    def test_wrong_secret(self) -> None:
        with pytest.raises(AuthError, match="wrong body signature"):
            check_signature({SIGNATURE_HEADER: sign_body("other", BODY)}, BODY, "s", required=True)

    def test_timestamp_not_a_number(self) -> None:
        headers = {SIGNATURE_HEADER: "ab", TIMESTAMP_HEADER: "yesterday"}
        with pytest.raises(AuthError, match="not a Unix timestamp"):
            check_signature(headers, BODY, "s", required=True)
