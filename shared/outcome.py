"""What a delivery step can end in, and how long a retry waits.

Expected conditions are values, not exceptions: each step of the delivery returns an
:class:`Outcome` or ``None`` ("go on"), and the delivery acts on the outcome (re-enqueue with the
right delay, dead-letter with the reason); the trigger only logs it. :func:`from_error` is the one
place where a Defender error becomes an outcome, and :func:`retry_delay` the one backoff policy —
both pure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.defender.errors import DefenderError, Paced


class Kind(StrEnum):
    CREATED = "created"
    COALESCED = "coalesced"
    DUPLICATE = "duplicate"
    NO_DEVICE = "no_device"
    NO_ANCHOR = "no_anchor"
    RETRY_AFTER = "retry_after"
    DEAD_LETTER = "dead_letter"
    NOTED = "noted"
    TAGGED = "tagged"
    HELD = "held"
    RESPONDED = "responded"
    BUNDLE = "bundle"  # several events of one webhook request; each one's outcome is in ``parts``


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    detail: str = ""
    alert_id: str | None = None
    incident_id: str | None = None
    machine_id: str | None = None
    retry_after: float | None = None
    error_code: str | None = None
    correlation_id: str | None = None
    slot: datetime | None = None
    api: str | None = None
    transient_failure: bool = False
    parts: tuple[Outcome, ...] = ()  # a bundle's: one per event delivered from it


def from_error(exc: DefenderError, stage: str) -> Outcome:
    """Our budget said wait, Defender said wait or failed for now, or Defender refused for good."""
    if isinstance(exc, Paced):
        return Outcome(
            Kind.RETRY_AFTER,
            detail=f"{stage}: waiting for the {exc.api} budget",
            retry_after=exc.retry_after,
            slot=exc.slot,
            api=exc.api,
            error_code=exc.code,
        )
    if exc.transient:
        return Outcome(
            Kind.RETRY_AFTER,
            detail=f"{stage}: {exc.status} {exc.code}",
            retry_after=exc.retry_after,
            error_code=exc.code,
            correlation_id=exc.target,
            transient_failure=exc.status != 429,
        )
    return Outcome(
        Kind.DEAD_LETTER,
        detail=f"{stage}: {exc.status} {exc.code}: {exc.message}",
        error_code=exc.code,
        correlation_id=exc.target,
    )


def retry_delay(
    outcome: Outcome, failures: int, now: datetime, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds until the retry: the reserved slot, else the server's Retry-After (plus jitter),
    else exponential backoff from ``base`` doubling to ``cap`` with ±20 % jitter."""
    draw: random.Random = rng or _JITTER
    if outcome.slot is not None:
        return max(0.0, (outcome.slot - now).total_seconds()) + 0.05
    if outcome.retry_after is not None:
        return outcome.retry_after + draw.uniform(0, 1)
    backoff: float = min(cap, base * 2 ** max(0, failures - 1))
    return backoff * draw.uniform(0.8, 1.2)


_JITTER = random.Random()  # noqa: S311 - jitter, not crypto
