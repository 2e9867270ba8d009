"""Quota pacing shared by every instance: a sliding-window budget per API in Table Storage.

Defender counts calls per application *and* tenant, so a per-process limiter would let N
instances make N times the allowed calls. Here every call first takes a token from one Table
entity per API (``calls`` in the window, optimistic concurrency on the ETag). When the budget is
spent the caller is given a **slot**: a time, spaced ``window/limit`` after the previous slot, at
which it may come back holding a ticket. That keeps a backlog in FIFO order and stops it from
stampeding back at the same instant (one token frees, N callers retry, N-1 are refused, ...).

The priority lane (Noxys critical alerts) may use tokens the normal lane leaves in reserve
(``PRIORITY_RESERVED_PER_MINUTE``) and never queues behind normal slots, so a backlog of
high-risk interactions cannot delay a critical alert by more than one token's wait.

:func:`decide` is the whole policy, pure; :class:`Pacer` only loads and stores its state.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.clock import Clock
from shared.defender.budget import BudgetSpent, api_of
from shared.storage import Codec, Contended, EntityTable, Stored, update_if_match

__all__ = ["BudgetSpent", "Pacer", "Quota", "api_of", "decide", "quotas_from"]

log = logging.getLogger(__name__)
MARGIN_SECONDS = 1.0  # our clocks and Defender's differ a little; count each call a bit longer


@dataclass(frozen=True)
class Quota:
    """``rules``: (window seconds, limit) pairs; ``reserved``: tokens of the first rule kept for
    priority; ``queue``: refused callers get FIFO slots (only where every slot holder will really
    call — alert creation, and the anchor search, made once per storm group by its leader while the
    rest of the storm joins; a refused device lookup is often answered by the cache next time)."""

    rules: tuple[tuple[int, int], ...]
    reserved: int = 0
    queue: bool = False


@dataclass
class BudgetState:
    calls: list[float] = field(default_factory=list)  # epoch seconds of granted calls, oldest first
    tail: float = 0.0  # the latest slot handed out
    blocked_until: float = 0.0  # Defender said 429 with Retry-After: nobody calls before this


@dataclass(frozen=True)
class Decision:
    admitted: bool
    wait: float = 0.0  # seconds until the slot (when not admitted)
    slot: float = 0.0


def _limits(quota: Quota, priority: bool) -> list[tuple[int, int]]:
    rules = list(quota.rules)
    if not priority and quota.reserved:
        window, limit = rules[0]
        rules[0] = (window, max(1, limit - quota.reserved))
    return rules


def decide(state: BudgetState, now: float, quota: Quota, *, priority: bool = False, ticketed: bool = False) -> Decision:
    """Admit one call now (and record it in ``state``) or hand out a slot (recorded as ``tail``)."""
    rules = _limits(quota, priority)
    longest = max(w for w, _ in quota.rules) + MARGIN_SECONDS
    state.calls = [t for t in state.calls if now - t < longest]
    free_at = max(now, state.blocked_until)
    for window, limit in rules:
        inside = [t for t in state.calls if now - t < window + MARGIN_SECONDS]
        if len(inside) >= limit:
            free_at = max(free_at, inside[-limit] + window + MARGIN_SECONDS)
    line_waiting = state.tail >= now  # at its very instant, a slot belongs to its ticket holder
    if free_at <= now and (priority or ticketed or not line_waiting):
        state.calls.append(now)
        return Decision(True)
    if priority or ticketed or not quota.queue:  # no line: come back at the next free instant
        return Decision(False, wait=free_at - now, slot=free_at)
    window, limit = rules[0]
    interval = (window + MARGIN_SECONDS) / limit  # the same margin the window check uses
    slot = max(free_at, state.tail + interval)
    state.tail = slot
    return Decision(False, wait=slot - now, slot=slot)


class Pacer:
    """Takes tokens from Table-stored budgets, one entity per API, retrying on ETag conflicts."""

    PARTITION = "budget"

    def __init__(self, table: EntityTable, quotas: dict[str, Quota], clock: Clock) -> None:
        self._table = table
        self.quotas = quotas
        self._clock = clock
        self._known: dict[str, Stored] = {}  # each budget row as this instance last wrote it

    def acquire(self, api: str, *, priority: bool = False, ticketed: bool = False) -> None:
        quota = self.quotas.get(api)
        if quota is None:
            return
        decided: list[Decision] = []

        def take(row: dict[str, Any] | None) -> dict[str, Any] | None:
            state = _load(row or {})
            decision = decide(state, self._clock.now().timestamp(), quota, priority=priority, ticketed=ticketed)
            decided[:] = [decision]
            if not decision.admitted and priority:
                return None  # state unchanged: nothing to store
            return _dump(api, state)

        try:
            self._remember(api, update_if_match(self._table, self.PARTITION, api, take, 50, known=self._known.get(api)))
        except Contended:
            raise BudgetSpent(api, 1.0, self._clock.now()) from None  # pathological contention: back off briefly
        (decision,) = decided
        if decision.admitted:
            return
        raise BudgetSpent(api, decision.wait, _dt(decision.slot))

    def block(self, api: str, seconds: float) -> None:
        """Defender answered 429 with Retry-After: hold every instance back for that long."""
        until = self._clock.now().timestamp() + seconds

        def hold_back(row: dict[str, Any] | None) -> dict[str, Any] | None:
            state = _load(row or {})
            if state.blocked_until >= until:
                return None
            state.blocked_until = until
            return _dump(api, state)

        with contextlib.suppress(Contended):
            self._remember(
                api, update_if_match(self._table, self.PARTITION, api, hold_back, 20, known=self._known.get(api))
            )

    def _remember(self, api: str, stored: Stored | None) -> None:
        """Keep the row just written: the next call decides on it and writes without a read (a
        copy another instance made stale is refused by its ETag, then read)."""
        if stored is not None:
            self._known[api] = stored


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True)
class _BudgetRow:
    """The stored budget row of one API (RowKey): ``calls`` is the JSON list of granted calls."""

    api: str
    calls: str = ""
    tail: float = 0.0
    blocked_until: float = 0.0


_CODEC = Codec(_BudgetRow, lambda r: (Pacer.PARTITION, r.api), in_key=("api",))


def _load(entity: dict[str, Any]) -> BudgetState:
    row = _CODEC.record(entity, api=str(entity.get("RowKey") or ""))
    return BudgetState(
        calls=[float(t) for t in json.loads(row.calls or "[]")], tail=row.tail, blocked_until=row.blocked_until
    )


def _dump(api: str, state: BudgetState) -> dict[str, Any]:
    calls = json.dumps([round(t, 3) for t in state.calls])
    return _CODEC.entity(_BudgetRow(api, calls, state.tail, state.blocked_until))


def quotas_from(settings: Any) -> dict[str, Quota]:
    """The budgets of docs/reference/defender-api.md, sized by settings."""
    return {
        "alerts.create": Quota(
            ((60, settings.alert_rate_per_minute),), reserved=settings.priority_reserved_per_minute, queue=True
        ),
        "alerts": Quota(((60, settings.alerts_api_rate_per_minute), (3600, 1500))),
        "machines": Quota(((60, settings.machines_rate_per_minute), (3600, settings.machines_rate_per_hour))),
        "hunting": Quota(((60, settings.hunting_rate_per_minute), (3600, settings.hunting_rate_per_hour)), queue=True),
        "graph": Quota(((60, settings.graph_rate_per_minute),)),
        "incidents": Quota(((60, settings.incidents_rate_per_minute),)),
        "actions": Quota(((60, 100), (3600, 1500))),  # machine actions: §8
        "indicators": Quota(((60, 100),)),  # §9
    }
