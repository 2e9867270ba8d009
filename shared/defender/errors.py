"""Typed outcomes of an outbound call: what failed (status, the service's code, correlation id,
Retry-After) and what the audit trail keeps of every call. No HTTP stack here, so the delivery can
reason about failures without importing one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Answers that prove the service did nothing: it refused the request as a whole (bad body,
# unauthenticated, forbidden, unknown machine or event, throttled). A 5xx does not: it may come
# from a gateway in front of the service after the service acted and its answer was lost.
NOTHING_DONE_STATUSES = frozenset({400, 401, 403, 404, 429})
# Failures without an answer that happened before the request left this process (no connection,
# no token, no secret). A read timeout or a connection lost after sending proves nothing.
NOT_SENT_CODES = frozenset({"Unreachable", "TokenError", "SecretUnavailable"})


class DefenderError(Exception):
    """A failed call. ``status`` 0 means no HTTP answer (network, timeout, token): ``code`` says
    which — ``Unreachable`` (no connection was made: nothing was sent), ``Timeout`` (sent, no answer
    in time), ``ConnectionLost`` (sent, the connection broke before the answer), ``TokenError`` and
    ``SecretUnavailable`` (no call was made)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (correlation id {target})" if target else ""))
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying later: throttling, server errors, timeouts, network trouble."""
        return self.status in (0, 408, 429) or self.status >= 500

    @property
    def nothing_done(self) -> bool:
        """The failure proves the call changed nothing, so a create may simply be sent again.
        Anything else (a 5xx, a timeout, a connection lost after the request was sent, an answer
        we could not read) may hide a call that worked: look before repeating it."""
        if self.status:
            return self.status in NOTHING_DONE_STATUSES
        return self.code in NOT_SENT_CODES


class Paced(DefenderError):
    """Our own budget said wait: no call was made. ``slot`` is the reserved time to come back."""

    def __init__(self, api: str, wait: float, slot: datetime) -> None:
        super().__init__(429, "PacingBudget", f"{api} budget spent; next slot in {wait:.0f}s", retry_after=wait)
        self.api = api
        self.slot = slot


@dataclass(frozen=True)
class CallRecord:
    """What the audit trail keeps of one call: no token, no body."""

    time: float
    service: str
    method: str
    path: str
    status: int
    latency_ms: float
    correlation_id: str | None
    error_code: str | None
    event_id: str | None
    attempt: int
