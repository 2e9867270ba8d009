"""Opening a ticket: a POST of a documented JSON body to ``TICKET_URL``, signed with the Standard
Webhooks scheme (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) so that a ServiceNow,
Jira or Teams relay can verify it came from this connector, exactly as the connector verifies
Noxys. The ``webhook-id`` is derived from the event, so a relay that deduplicates on it (as the
scheme recommends) never opens the same ticket twice, even if the connector sends it again after
a crash.

A redirect is never followed: a 307/308 would re-POST the signed body (a user, a device) wherever
it points — plain http included — and a 302 would turn it into a GET to any address, an internal
one too. A redirect is a failure that names its status and says it was not followed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from shared.defender.client import http_session
from shared.defender.errors import DefenderError
from shared.secrets import VaultUnavailable
from shared.webhook import sign


class HttpTickets:
    """``secret`` is read at each ticket (Key Vault caches it), so a rotation needs no restart;
    ``now`` is the app's clock (the signature's timestamp follows simulated time in tests)."""

    def __init__(
        self, url: str, secret: Callable[[], str | None], now: Callable[[], datetime], timeout: float = 15.0
    ) -> None:
        self.url, self.secret, self.now, self.timeout = url, secret, now, timeout
        self._http = http_session()

    def open(self, msg_id: str, body: dict[str, Any]) -> str:
        import requests

        try:
            secret = self.secret()
        except VaultUnavailable as exc:
            raise DefenderError(0, "TicketSecretUnavailable", str(exc)) from None
        if not secret:
            raise DefenderError(400, "TicketNotConfigured", "no ticket signing secret (Key Vault or setting)")
        data = json.dumps(body).encode()
        stamp = int(self.now().timestamp())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret, msg_id, stamp, data),
        }
        try:
            resp = self._http.post(self.url, data=data, headers=headers, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise DefenderError(0, "TicketUnreachable", f"{exc.__class__.__name__} posting the ticket") from None
        if 300 <= resp.status_code < 400:
            raise DefenderError(
                resp.status_code,
                "TicketRedirected",
                f"the ticket endpoint redirected ({resp.status_code}): not followed",
            )
        if resp.status_code >= 300:
            raise DefenderError(resp.status_code, "TicketRefused", f"the ticket endpoint answered {resp.status_code}")
        try:
            answer = resp.json()
        except ValueError:
            answer = {}
        reference = answer.get("number") or answer.get("id") if isinstance(answer, dict) else None
        return f"ticket {reference}" if reference else f"ticket accepted ({resp.status_code})"
