"""Standard Webhooks verification for Noxys deliveries (pure: no I/O, clock injected).

Signing (the CLI, the tests) is the reference ``standardwebhooks`` library; verification computes
the same HMAC-SHA256 over the *raw* body bytes (``{id}.{timestamp}.{body}``), so that a correctly
signed body that is not UTF-8 reaches the parser and gets its 400, instead of a misleading 401
(the tests cross-check both against each other). Around it, what the product needs:

* several secrets at once (``NOXYS_SIGNING_SECRET`` is space-separated during rotation); any one
  valid ``v1,`` entry under any one secret passes;
* fail closed: no secret configured means every request is refused;
* one exception type carrying the HTTP status, whatever was malformed (the library raises
  ``ValueError``/``binascii.Error``/``UnicodeDecodeError`` on some malformed headers; all of them
  must become 401, never 500);
* the optional ``Authorization: Bearer`` token, compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

TOLERANCE = timedelta(minutes=5)


class WebhookError(Exception):
    """A request that must be refused; ``status`` is the HTTP answer, ``reason`` is safe to log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def check_bearer(headers: Mapping[str, str], expected: str | None) -> None:
    """When a bearer token is configured, require it exactly (constant-time)."""
    if not expected:
        return
    value = _lower(headers).get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise WebhookError(401, "missing or wrong bearer token")


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    now: datetime | None = None,
) -> str:
    """Verify a Standard Webhooks signature and return the ``webhook-id``.

    Raises WebhookError(503) when no secret is configured (fail closed, and the sender retries
    once an operator has fixed it), WebhookError(401) for anything else that does not verify.
    """
    if not secrets:
        raise WebhookError(503, "no signing secret configured (NOXYS_SIGNING_SECRET): refusing every event")
    h = _lower(headers)
    msg_id, stamp, signatures = (
        h.get("webhook-id"),
        h.get("webhook-timestamp"),
        h.get("webhook-signature"),
    )
    if not (msg_id and stamp and signatures):
        raise WebhookError(401, "missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        sent = datetime.fromtimestamp(int(stamp), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise WebhookError(401, "malformed webhook-timestamp header") from None
    current = now or datetime.now(UTC)
    if abs(current - sent) > TOLERANCE:
        raise WebhookError(401, "webhook-timestamp outside the 5 minute tolerance (replay?)")

    signed = f"{msg_id}.{int(sent.timestamp())}.".encode() + body  # the raw bytes, as the scheme says
    for secret in secrets:  # well-formed: Settings validated each one
        key = base64.b64decode(secret.removeprefix("whsec_") + "==")
        expected_sig = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        for entry in signatures.split():
            version, _, sig = entry.partition(",")
            if version == "v1" and hmac.compare_digest(sig.encode(), expected_sig):
                return msg_id
    raise WebhookError(401, "no valid signature")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value Noxys would send (used by the CLI and tests)."""
    from standardwebhooks.webhooks import Webhook

    return Webhook(secret).sign(
        msg_id=msg_id, timestamp=datetime.fromtimestamp(timestamp, tz=UTC), data=body.decode("utf-8")
    )
