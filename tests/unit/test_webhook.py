"""Standard Webhooks verification: every malformed input is a 401, never an exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from shared.webhook import WebhookError, check_bearer, sign, verify_signature

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = "whsec_" + base64.b64encode(b"another-secret-another-secret-!!").decode()
NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
BODY = b'{"id":"evt_1","type":"interaction.high_risk"}'


def headers(sig: str, *, msg_id: str = "evt_1", ts: int = TS) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_sign_matches_the_spec_by_hand() -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"evt_1.{TS}.".encode() + BODY, hashlib.sha256).digest()
    assert sign(SECRET, "evt_1", TS, BODY) == "v1," + base64.b64encode(mac).decode()


def test_valid_signature_returns_webhook_id() -> None:
    assert verify_signature(BODY, headers(sign(SECRET, "evt_1", TS, BODY)), [SECRET], now=NOW) == "evt_1"


def test_any_of_several_secrets_passes_during_rotation() -> None:
    sig = sign(OTHER, "evt_1", TS, BODY)
    assert verify_signature(BODY, headers(sig), [SECRET, OTHER], now=NOW) == "evt_1"


def test_any_of_several_signature_entries_passes() -> None:
    sig = "v1,AAAA " + "v2,whatever " + sign(SECRET, "evt_1", TS, BODY)
    assert verify_signature(BODY, headers(sig), [SECRET], now=NOW) == "evt_1"


def test_header_names_are_case_insensitive() -> None:
    h = {k.upper(): v for k, v in headers(sign(SECRET, "evt_1", TS, BODY)).items()}
    assert verify_signature(BODY, h, [SECRET], now=NOW) == "evt_1"


def test_tampered_body_fails() -> None:
    with pytest.raises(WebhookError) as err:
        verify_signature(BODY + b" ", headers(sign(SECRET, "evt_1", TS, BODY)), [SECRET], now=NOW)
    assert err.value.status == 401


def test_other_message_id_fails() -> None:
    with pytest.raises(WebhookError):
        verify_signature(BODY, headers(sign(SECRET, "evt_1", TS, BODY), msg_id="evt_2"), [SECRET], now=NOW)


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_timestamp_outside_five_minutes_fails(offset: timedelta) -> None:
    ts = int((NOW + offset).timestamp())
    with pytest.raises(WebhookError) as err:
        verify_signature(BODY, headers(sign(SECRET, "evt_1", ts, BODY), ts=ts), [SECRET], now=NOW)
    assert err.value.status == 401 and "tolerance" in err.value.reason


def test_timestamp_just_inside_tolerance_passes() -> None:
    ts = TS - 299
    assert verify_signature(BODY, headers(sign(SECRET, "evt_1", ts, BODY), ts=ts), [SECRET], now=NOW) == "evt_1"


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"webhook-id": "evt_1", "webhook-timestamp": str(TS)},
        {"webhook-id": "evt_1", "webhook-timestamp": "yesterday", "webhook-signature": "v1,abc"},
        {"webhook-id": "evt_1", "webhook-timestamp": "9" * 40, "webhook-signature": "v1,abc"},
        {"webhook-id": "evt_1", "webhook-timestamp": str(TS), "webhook-signature": "no-comma-here"},
        {"webhook-id": "evt_1", "webhook-timestamp": str(TS), "webhook-signature": "v1,@@not-base64@@"},
        {"webhook-id": "evt_1", "webhook-timestamp": str(TS), "webhook-signature": ","},
    ],
)
def test_malformed_headers_are_401_not_crashes(bad: dict[str, str]) -> None:
    with pytest.raises(WebhookError) as err:
        verify_signature(BODY, bad, [SECRET], now=NOW)
    assert err.value.status == 401


def test_non_utf8_body_with_a_wrong_signature_is_401() -> None:
    with pytest.raises(WebhookError) as err:
        verify_signature(b"\xff\xfe", headers("v1,abc"), [SECRET], now=NOW)
    assert err.value.status == 401


def test_no_secret_configured_refuses_everything() -> None:
    with pytest.raises(WebhookError) as err:
        verify_signature(BODY, headers(sign(SECRET, "evt_1", TS, BODY)), [], now=NOW)
    assert err.value.status == 503 and "NOXYS_SIGNING_SECRET" in err.value.reason


def test_bearer_checked_only_when_configured() -> None:
    check_bearer({}, None)
    check_bearer({"Authorization": "Bearer tok-123"}, "tok-123")
    check_bearer({"authorization": "bearer tok-123"}, "tok-123")
    for wrong in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic tok-123"},
        {"Authorization": "tok-123"},
    ):
        with pytest.raises(WebhookError) as err:
            check_bearer(wrong, "tok-123")
        assert err.value.status == 401


def test_a_signed_body_that_is_not_utf8_verifies_and_is_left_to_the_parser() -> None:
    """The scheme signs raw bytes: such a body is the parser's 400, not a misleading 401."""
    body = b'{"id": "\xff"}'
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    sig = base64.b64encode(hmac.new(key, f"msg_9.{TS}.".encode() + body, hashlib.sha256).digest()).decode()
    headers = {"webhook-id": "msg_9", "webhook-timestamp": str(TS), "webhook-signature": f"v1,{sig}"}
    assert verify_signature(body, headers, [SECRET], now=NOW) == "msg_9"
