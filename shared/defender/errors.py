"""Typed outcomes of an outbound call: what failed (status, the service's code, correlation id,
Retry-After) and what the audit trail keeps of every call. No HTTP stack here, so the delivery can
reason about failures without importing one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class DefenderError(Exception):
    """A failed call. ``status`` 0 means no HTTP answer (network, timeout, token)."""

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
