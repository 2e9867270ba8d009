"""The review's reads (ledger, Defender, response rows) and the scheduled weekly run, shared by
``python -m shared review`` and the hourly health timer (shared.functions.health), which pass in
what they read with (the wiring's adapters)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared import review
from shared.config import Settings
from shared.delivery.ledger import Ledger
from shared.readback import read_back
from shared.response.store import ResponseStore
from shared.suppress import Suppressions, last_due, over_threshold

log = logging.getLogger(__name__)
PERIOD = timedelta(days=7)


@dataclass(frozen=True)
class Sources:
    ledger: Ledger
    defender: Any  # the paced Defender client (list_alerts, get_alert)
    responses: ResponseStore

    @classmethod
    def of(cls, ledger: Ledger, defender: Any, table: Callable[[str], Any]) -> Sources:
        """From the wiring's adapters (``table``: the wiring's table by name)."""
        return cls(ledger, defender, ResponseStore(table("Responses")))


def collect(
    src: Sources,
    since: datetime,
    until: datetime,
    progress: Callable[[int], Any] | None = None,
    total: Callable[[int], Any] | None = None,
) -> review.Review:
    """The review of [since, until): each of our alerts read back from Defender through the shared
    pacing budget (``progress(1)`` per alert read, after ``total(n)``)."""
    entries = list(src.ledger.between(since.timestamp(), until.timestamp()))
    ids = sorted({e.alert_id for e in entries if e.alert_id and e.via != "graph"})
    if total:
        total(len(ids))
    alerts = read_back(src.defender, ids, since, progress=lambda: progress(1) if progress else None) if ids else {}
    actions = src.responses.between(since.timestamp(), until.timestamp())
    return review.build(entries, alerts, actions, since=since, until=until)


def scheduled(s: Settings, store: Suppressions, src: Sources, now: datetime) -> list[str]:
    """Run the weekly review when ``REVIEW_SCHEDULE`` says it is due and it has not run since, and
    keep its summary; with ``SUPPRESS_FALSE_POSITIVE_RATE``, judge the policies every hour (the
    analysts' latest classifications, read back): suppress one above the rate, lift one no longer
    above it. What changed."""
    latest = store.latest()
    due = not latest or datetime.fromisoformat(str(latest["at"])) < last_due(s.review_schedule, now)
    suppressing = s.suppress_false_positive_rate is not None
    if not due and not suppressing:
        return []
    built = collect(src, now - PERIOD, now)
    changes: list[str] = []
    if s.suppress_false_positive_rate is not None:
        wanted = over_threshold(built, s.suppress_false_positive_rate, s.suppress_min_classified)
        changes = store.apply(wanted, now)
    if due:
        store.keep(built, changes, now)
    for line in [*(built.suggestions if due else []), *changes]:
        log.info("review: %s", line)
    return changes
