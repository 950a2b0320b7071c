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
    identify_sender,
    sign_body,
)
from pitcrew.alerts.errors import AuthError

BODY = b'{"version":"4"}'
NOW = 1_700_000_000


def _signed(secret: str, body: bytes = BODY, timestamp: str = str(NOW)) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign_body(secret, body, timestamp), TIMESTAMP_HEADER: timestamp}


class TestSignBody:
    def test_is_hex_hmac_sha256_of_body(self) -> None:
        assert sign_body("s3cret", BODY) == hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()

    def test_timestamp_is_prefixed_with_colon(self) -> None:
        expected = hmac.new(b"s3cret", b"1700000000:" + BODY, hashlib.sha256).hexdigest()
        assert sign_body("s3cret", BODY, "1700000000") == expected


class TestCheckBearer:
    @pytest.mark.parametrize("header", ["Bearer tok", "bearer tok"])
    def test_accepts_right_token_and_only_it(self, header: str) -> None:
        assert check_bearer(header, "tok") is None  # accepted: no AuthError
        for configured in ("tok2", "to", "TOK"):  # the same header against any other token is refused
            with pytest.raises(AuthError, match="wrong bearer token"):
                check_bearer(header, configured)

    @pytest.mark.parametrize("header", [None, "", "tok", "Basic dG9r", "Bearer", "Bearer tok2", "Bearer to"])
    def test_refuses_missing_or_wrong(self, header: str | None) -> None:
        with pytest.raises(AuthError):
            check_bearer(header, "tok")

    def test_empty_configured_token_fails_closed(self) -> None:
        with pytest.raises(AuthError, match="no token configured"):
            check_bearer("Bearer ", "")


class TestIdentifySender:
    TOKENS = {"alertmanager": "am-token", "grafana": "gf-token"}

    def test_the_token_names_the_sender(self) -> None:
        assert identify_sender("Bearer am-token", self.TOKENS) == "alertmanager"
        assert identify_sender("bearer gf-token", self.TOKENS) == "grafana"

    @pytest.mark.parametrize("header", [None, "", "am-token", "Basic am-token", "Bearer", "Bearer x", "Bearer gf"])
    def test_refuses_missing_or_wrong(self, header: str | None) -> None:
        with pytest.raises(AuthError):
            identify_sender(header, self.TOKENS)

    def test_an_empty_token_closes_that_senders_path(self) -> None:
        tokens = {"alertmanager": "am-token", "grafana": ""}
        for header in ("Bearer ", "Bearer  ", "Bearer gf-token"):
            with pytest.raises(AuthError):
                identify_sender(header, tokens)
        assert identify_sender("Bearer am-token", tokens) == "alertmanager"

    def test_no_token_at_all_fails_closed(self) -> None:
        with pytest.raises(AuthError, match="no token configured"):
            identify_sender("Bearer ", {"alertmanager": "", "grafana": ""})

    def test_one_token_for_two_senders_is_refused(self) -> None:
        with pytest.raises(AuthError, match="same token"):
            identify_sender("Bearer t", {"alertmanager": "t", "grafana": "t"})

    def test_every_token_is_compared_in_constant_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        compared: list[bytes] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            compared.append(b)
            return real(a, b)

        monkeypatch.setattr("pitcrew.alerts.auth.hmac.compare_digest", spy)
        identify_sender("Bearer am-token", self.TOKENS)  # matches the first: the second is still compared
        assert compared == [b"am-token", b"gf-token"]


class TestCheckSignature:
    def test_absent_and_not_required(self) -> None:
        assert check_signature({}, BODY, "s", required=False) is False

    def test_absent_and_required(self) -> None:
        with pytest.raises(AuthError, match="missing"):
            check_signature({}, BODY, "s", required=True)

    @pytest.mark.parametrize("required", [True, False])
    def test_signature_without_timestamp_is_refused(self, required: bool) -> None:
        # It would never expire: a captured request could be replayed at any time.
        with pytest.raises(AuthError, match=f"needs the {TIMESTAMP_HEADER} header"):
            check_signature({SIGNATURE_HEADER: sign_body("s", BODY)}, BODY, "s", required=required, now=NOW)

    @pytest.mark.parametrize("timestamp", ["nan", "inf", "-inf"])
    def test_timestamp_that_is_no_time_is_refused(self, timestamp: str) -> None:
        with pytest.raises(AuthError, match="away from now"):
            check_signature(_signed("s", timestamp=timestamp), BODY, "s", required=True, now=NOW)

    def test_valid_with_timestamp(self) -> None:
        headers = {SIGNATURE_HEADER: sign_body("s", BODY, "1000"), TIMESTAMP_HEADER: "1000"}
        assert check_signature(headers, BODY, "s", required=True, now=1000 + MAX_CLOCK_SKEW_S - 1)

    def test_stale_timestamp_is_a_replay(self) -> None:
        headers = {SIGNATURE_HEADER: sign_body("s", BODY, "1000"), TIMESTAMP_HEADER: "1000"}
        with pytest.raises(AuthError, match="away from now"):
            check_signature(headers, BODY, "s", required=True, now=1000 + MAX_CLOCK_SKEW_S + 1)

    def test_tampered_body(self) -> None:
        with pytest.raises(AuthError, match="wrong body signature"):
            check_signature(_signed("s"), BODY + b" ", "s", required=True, now=NOW)

    def test_tampered_timestamp(self) -> None:
        headers = {**_signed("s"), TIMESTAMP_HEADER: str(NOW + 1)}
        with pytest.raises(AuthError, match="wrong body signature"):
            check_signature(headers, BODY, "s", required=True, now=NOW)

    def test_wrong_secret(self) -> None:
        with pytest.raises(AuthError, match="wrong body signature"):
            check_signature(_signed("other"), BODY, "s", required=True, now=NOW)

    def test_timestamp_not_a_number(self) -> None:
        headers = {SIGNATURE_HEADER: "ab", TIMESTAMP_HEADER: "yesterday"}
        with pytest.raises(AuthError, match="not a Unix timestamp"):
            check_signature(headers, BODY, "s", required=True)
