"""How long each state table keeps a row: the rules (pure) and the purge that applies them.

Every table the connector writes grows with traffic, so each has a retention with a documented
default (docs/configuration.md). :func:`rules` decides, from the settings and the clock, which rows
have expired — as Table Storage filters, so the service does the selection; :func:`purge` deletes
them in pages, at most ``limit`` a table per run (the hourly health timer runs it, so a backlog is
worked off over a few runs instead of in one long one). Deleting is idempotent: a row already gone
is not an error.

What is never purged: a ledger entry that is not final (its event is still being delivered), a
coalescing group with a note still scheduled, and held events (kept until the switch is turned
back on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.config import Settings
from shared.delivery.ledger import LedgerState
from shared.storage import EntityTable

log = logging.getLogger(__name__)
PAGE = 100
PLATFORM_MEMORY_DAYS = 90  # "a platform this user never used before" looks this far back
FINAL = [s.value for s in LedgerState if s.final]


@dataclass(frozen=True)
class Rule:
    table: str  # the table's name without TABLE_PREFIX
    expired: str  # an OData filter that selects the expired rows
    keeps: str  # what the rule keeps, in words (for logs and docs)


def _hour(t: datetime) -> str:
    return t.strftime("%Y%m%d%H")


def rules(settings: Settings, now: datetime) -> list[Rule]:
    """The retention rules in force at ``now``."""
    ledger = (now - timedelta(days=settings.ledger_retention_days)).timestamp()
    groups = (now - timedelta(days=settings.groups_retention_days)).timestamp()
    dead = (now - timedelta(days=settings.dead_letter_retention_days)).timestamp()
    counters = _hour(now - timedelta(days=settings.counters_retention_days))
    patterns = int((now - timedelta(days=settings.patterns_retention_days)).timestamp() * 1000)
    platforms = now - timedelta(days=PLATFORM_MEMORY_DAYS)
    final = " or ".join(f"state eq '{s}'" for s in FINAL)
    return [
        Rule(
            "Ledger",
            f"RowKey eq 'event' and updated_at lt {ledger:.3f} and ({final})",
            f"final entries for {settings.ledger_retention_days} days after their last change",
        ),
        Rule(
            "Groups",
            f"((RowKey eq 'group' or PartitionKey eq 'group') and last_event_at lt {groups:.3f} and note_scheduled"
            f" eq false) or (RowKey ge 'm-' and RowKey lt 'm.' and at lt {groups:.3f})",  # 'group': older builds
            f"coalescing groups for {settings.groups_retention_days} days after their last event (members: joining)",
        ),
        Rule("Devices", f"PartitionKey eq 'device' and expires_at lt {now.timestamp():.3f}", "unexpired resolutions"),
        Rule(
            "Counters",
            f"PartitionKey lt '{counters}'",  # hour partitions; the 'marks' partition sorts after digits
            f"hourly counters for {settings.counters_retention_days} days",
        ),
        Rule(
            "DeadLetters",
            f"PartitionKey eq 'deadletter' and dead_at lt {dead:.3f}",
            f"dead letters for {settings.dead_letter_retention_days} days",
        ),
        Rule(
            "Responses",
            f"PartitionKey ne 'guard' and at lt {ledger:.3f}",
            f"response actions for {settings.ledger_retention_days} days, like the ledger",
        ),
        Rule(
            "Patterns",
            # a pack's ``at`` is its newest observation's (its key, its bucket's start): purged
            # once everything it holds has expired
            f"RowKey ge 'o-' and RowKey lt 'o-{patterns:015d}' and at lt {patterns / 1000:.3f}",
            f"pattern observations for {settings.patterns_retention_days} days (the windows span 24 h)",
        ),
        Rule(
            "Patterns",
            f"RowKey eq 'platforms' and Timestamp lt datetime'{platforms:%Y-%m-%dT%H:%M:%SZ}'",
            f"a user's known platforms for {PLATFORM_MEMORY_DAYS} days after the last one first seen",
        ),
    ]


def purge(table: EntityTable, rule: Rule, *, limit: int) -> int:
    """Delete up to ``limit`` rows the rule selects; returns how many were deleted."""
    from azure.core.exceptions import ResourceNotFoundError

    removed = 0
    for row in table.query_entities(rule.expired, select=["PartitionKey", "RowKey"], results_per_page=PAGE):
        try:
            table.delete_entity(row["PartitionKey"], row["RowKey"])
        except ResourceNotFoundError:  # deleted meanwhile (another instance, a replay): nothing to do
            continue
        removed += 1
        if removed >= limit:
            break
    return removed
