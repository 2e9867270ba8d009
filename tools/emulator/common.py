"""What every part of the emulator shares: the two error shapes (Defender's and Entra's), the
time format Defender uses, and the failure switches a test turns on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from shared.clock import Clock


@dataclass
class Faults:
    """Failure modes a test switches on (in process, or with POST /emulator/faults)."""

    burst_429: int = 0  # the next N API calls answer 429
    burst_retry_after: int = 30
    error_rate: float = 0.0  # this share of API calls answers 503
    fail_next: int = 0  # the next N API calls answer 503
    fail_path: str = ""  # burst_429 and fail_next only for calls whose path contains this
    latency: float = 0.0  # seconds added to each API call (after it has been handled)
    latency_path: str = ""  # only calls whose path contains this
    token_outage: bool = False  # the token endpoint answers 503
    # The next N CreateAlertByReference calls make the alert, then the answer is lost the way a
    # gateway in front of Defender loses it: "500"/"502"/"503"/"504" (that status instead of the
    # alert), "timeout" (the answer comes after ``lost_answer_delay`` seconds, past the client's
    # timeout) or "reset" (the connection is closed without an answer); a comma-separated list
    # takes one mode per lost answer, in turn.
    lose_answer: int = 0
    lose_answer_as: str = "502"
    lost_answer_delay: float = 2.0
    index_delay: float = 0.0  # seconds before a new alert is listed by GET /api/alerts
    seed: int = 7
    injected: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1


class ApiError(Exception):
    """An MDE-style error: ``{"error": {"code", "message", "target"}}`` with a status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
        self.headers = headers or {}


class TokenError(Exception):
    """An Entra-style OAuth error: ``{"error", "error_description"}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def parse_time(text: str) -> datetime:
    """ISO 8601 with 'Z' and up to 7 fractional digits (as advanced hunting returns)."""
    t = text.strip().replace("Z", "+00:00")
    if "." in t:
        head, rest = t.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits) :]
        t = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    value = datetime.fromisoformat(t)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_time(t: datetime) -> str:
    """Seven fractional digits, like Defender does."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


class Core(Protocol):
    """What the vault, logs and hunting parts need of the whole state."""

    clock: Clock
    signing_key: bytes
    faults: Faults
