"""The scheduled review and the policies it suppresses, in Table Storage (``Reviews``).

* ``REVIEW_SCHEDULE`` (``Mon 06:00``, UTC) is when the weekly review is due; the hourly health
  timer runs it at its first run at or after that moment (:func:`last_due`), so no extra timer or
  app setting has to exist for it, and a missed hour is caught up by the next one. Its summary is
  kept (row ``latest``) for ``status`` and the health record.
* With ``SUPPRESS_FALSE_POSITIVE_RATE`` set (off by default), a policy whose false-positive rate is
  above it over at least ``SUPPRESS_MIN_CLASSIFIED`` classified alerts is **suppressed**: its events
  stop raising alerts (the webhook still accepts them, and they still go to the hunting table).
  The policies are judged every hour (shared.review_job.scheduled): one whose rate is no longer
  above the threshold is lifted within the hour. An operator lifts one with ``review unsuppress
  POLICY``, which also holds it off for 7 days, so the same week of verdicts does not suppress it
  again at once.
* The webhook reads the suppressed set at most once a minute per instance (:class:`Cached`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.review import Review
from shared.storage import Codec, EntityTable, table_key

log = logging.getLogger(__name__)
DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
SUPPRESSED = "suppressed"
OVERRIDE = "override"
REVIEW = "review"
OVERRIDE_DAYS = 7


@dataclass(frozen=True)
class SuppressedRow:
    """A suppressed policy (PartitionKey ``suppressed``); ``since`` is ISO 8601."""

    policy_id: str
    name: str = ""
    reason: str = ""
    since: str = ""


@dataclass(frozen=True)
class OverrideRow:
    """An operator's re-enabling (PartitionKey ``override``): no suppression before ``until``."""

    policy_id: str
    until: float = 0.0


@dataclass(frozen=True)
class ReviewRow:
    """The last scheduled review's summary, as JSON (cut at 30,000 characters)."""

    summary: str = ""


_SUPPRESSED = Codec(SuppressedRow, lambda r: (SUPPRESSED, table_key(r.policy_id)))
_OVERRIDE = Codec(OverrideRow, lambda r: (OVERRIDE, table_key(r.policy_id)), in_key=("policy_id",))
_REVIEW = Codec(ReviewRow, lambda _: (REVIEW, "latest"), limits={"summary": 30000})


def parse_schedule(text: str) -> tuple[int, int, int]:
    """``"Mon 06:00"`` → (weekday, hour, minute); ValueError naming what is wrong."""
    day, _, clock = text.strip().partition(" ")
    hour, _, minute = clock.strip().partition(":")
    if day[:3].lower() not in DAYS or not hour.isdigit() or not minute.isdigit():
        raise ValueError(f"REVIEW_SCHEDULE {text!r}: expected a day and a UTC time, e.g. 'Mon 06:00'")
    h, m = int(hour), int(minute)
    if h > 23 or m > 59:
        raise ValueError(f"REVIEW_SCHEDULE {text!r}: the time is out of range")
    return DAYS[day[:3].lower()], h, m


def last_due(schedule: str, now: datetime) -> datetime:
    """The most recent scheduled moment at or before ``now``."""
    day, hour, minute = parse_schedule(schedule)
    moment = now.replace(hour=hour, minute=minute, second=0, microsecond=0) - timedelta(days=(now.weekday() - day) % 7)
    return moment if moment <= now else moment - timedelta(days=7)


def over_threshold(review: Review, rate: float, min_classified: int) -> dict[str, tuple[str, str]]:
    """Policy id → (name, the reason in words) for each policy the review puts above the rate."""
    return {
        p.id: (p.name, f"{p.false_positives} of {p.classified} classified alerts were false positives "
                       f"({round((p.false_positive_rate or 0) * 100)} % > {round(rate * 100)} %)")
        for p in review.policies
        if p.classified >= min_classified and p.false_positive_rate is not None and p.false_positive_rate > rate
    }  # fmt: skip


@dataclass
class Suppressions:
    table: EntityTable

    def active(self) -> dict[str, dict[str, Any]]:
        """Suppressed policy id → {"name", "reason", "since"}."""
        rows = self.table.query_entities("PartitionKey eq @p", parameters={"p": SUPPRESSED}, results_per_page=1000)
        found = (_SUPPRESSED.record(e) for e in rows)
        return {r.policy_id: {"name": r.name, "reason": r.reason, "since": r.since} for r in found}

    def _override_until(self, policy_id: str) -> float:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return _OVERRIDE.record(self.table.get_entity(OVERRIDE, table_key(policy_id)), policy_id=policy_id).until
        except ResourceNotFoundError:
            return 0.0

    def apply(self, wanted: dict[str, tuple[str, str]], now: datetime) -> list[str]:
        """Suppress the policies ``wanted`` names (unless an operator re-enabled them lately) and
        lift the others; what changed, in words."""
        from azure.data.tables import UpdateMode

        said, current = [], self.active()
        for policy_id, (name, reason) in wanted.items():
            if policy_id in current or self._override_until(policy_id) > now.timestamp():
                continue
            suppressed = SuppressedRow(policy_id, name, reason, now.isoformat())
            self.table.upsert_entity(_SUPPRESSED.entity(suppressed), mode=UpdateMode.REPLACE)
            said.append(f"policy '{name}' suppressed: {reason}")
        for policy_id, row in current.items():
            if policy_id not in wanted:
                self.table.delete_entity(SUPPRESSED, table_key(policy_id))
                said.append(f"policy '{row['name']}' no longer suppressed: its false-positive rate fell")
        return said

    def unsuppress(self, policy: str, now: datetime) -> list[str]:
        """An operator re-enables a policy (its id or name, case-insensitive)."""
        from azure.data.tables import UpdateMode

        wanted = policy.strip().casefold()
        found = {k: v for k, v in self.active().items() if wanted in (k.casefold(), str(v["name"]).casefold())}
        for policy_id in found:
            self.table.delete_entity(SUPPRESSED, table_key(policy_id))
            until = (now + timedelta(days=OVERRIDE_DAYS)).timestamp()
            self.table.upsert_entity(_OVERRIDE.entity(OverrideRow(policy_id, until)), mode=UpdateMode.REPLACE)
        return [f"policy '{row['name']}' ({k}) re-enabled: its events raise alerts again" for k, row in found.items()]

    def keep(self, review: Review, changes: list[str], now: datetime) -> None:
        """The scheduled review's summary, for status and the health record."""
        from azure.data.tables import UpdateMode

        summary = {
            "at": now.isoformat(), "since": review.since, "until": review.until, "alerts": review.alerts,
            "classified": review.classified, "suggestions": review.suggestions[:10], "changes": changes,
        }  # fmt: skip
        self.table.upsert_entity(_REVIEW.entity(ReviewRow(json.dumps(summary))), mode=UpdateMode.REPLACE)

    def latest(self) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(json.loads(_REVIEW.record(self.table.get_entity(REVIEW, "latest")).summary))
        except ResourceNotFoundError:
            return None


class Cached:
    """A value read at most once per ``seconds`` (the webhook asks on every request)."""

    def __init__(self, read: Callable[[], frozenset[str]], now: Callable[[], float], seconds: float = 60.0) -> None:
        self._read, self._now, self._seconds = read, now, seconds
        self._value: frozenset[str] = frozenset()
        self._at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> frozenset[str]:
        with self._lock:
            if self._now() - self._at >= self._seconds:
                try:
                    self._value = self._read()
                except Exception as exc:  # a storage hiccup keeps the last known set, never stops intake
                    log.warning("suppressed policies not read, the last set is kept: %s", exc.__class__.__name__)
                self._at = self._now()
            return self._value


def status_lines(latest: dict[str, Any] | None, suppressed: dict[str, dict[str, Any]]) -> list[str]:
    """What ``status`` says about the review and the suppressed policies."""
    out = []
    if latest:
        out.append(
            f"  last review {latest['at']}: {latest['alerts']} alert(s), {latest['classified']} classified"
            + (f"; {latest['suggestions'][0]}" if latest.get("suggestions") else "")
        )
    out += [
        f"  ! policy '{row['name']}' ({pid}) SUPPRESSED since {row['since']}: {row['reason']} — its events go to "
        f"hunting only; `python -m shared review unsuppress {pid}` re-enables it"
        for pid, row in suppressed.items()
    ]
    return out
