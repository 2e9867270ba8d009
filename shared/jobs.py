"""The work the timers do, with everything they touch passed in: the blueprints stay thin (build
from ``shared.wiring``, call, log nothing of their own), and each job is callable from a test, the
CLI or a benchmark with the same code path the timer runs.

* :func:`release_held` — switched back on: kept events back on their queue, oldest first;
* :func:`purge_audit` — AUDIT_RETENTION_DAYS applied to the audit trail;
* :func:`purge_state` — the other state tables' retention (``shared.retention``);
* :func:`ship_rows` — one run of the hunting outbox into NoxysInteractions_CL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime, timedelta

from shared import retention
from shared.audit import AuditTrail
from shared.config import Settings
from shared.delivery.hold import Held
from shared.delivery.hunting_outbox import HuntingOutbox
from shared.delivery.hunting_sink import ShipReport, Uploader, ship
from shared.delivery.ledger import Ledger
from shared.storage import EntityTable, MessageQueue

log = logging.getLogger(__name__)


def release_held(settings: Settings, held: Held, send: Callable[[str, str], object], now: datetime) -> int:
    if not held.is_on():
        return 0
    released = held.release(send, now)
    if released:
        log.info("integration on: released %d kept event(s), oldest first", released)
    return released


def purge_audit(audit: AuditTrail, now: datetime, retention_days: int) -> int:
    """Housekeeping must never fail the health check: a failure is logged and skipped."""
    try:
        removed = audit.purge(now, retention_days)
    except Exception as exc:
        log.warning("health: audit retention not applied: %s", exc.__class__.__name__)
        return 0
    if removed:
        log.info("health: removed %d audit row(s) older than the retention", removed)
    return removed


def purge_state(settings: Settings, table: Callable[[str], EntityTable], now: datetime) -> dict[str, int]:
    """Apply every state table's retention (``shared.retention``); how many rows each lost. A table
    that cannot be purged now is skipped (logged) and tried again at the next run."""
    removed: dict[str, int] = {}
    for rule in retention.rules(settings, now):
        try:
            gone = retention.purge(table(rule.table), rule, limit=settings.purge_limit_per_table)
            removed[rule.table] = removed.get(rule.table, 0) + gone  # a table may have several rules
        except Exception as exc:
            log.warning("retention: %s not purged: %s", rule.table, exc.__class__.__name__)
    if any(removed.values()):
        log.info("retention: removed %s", ", ".join(f"{n} {t}" for t, n in removed.items() if n))
    return removed


def ship_rows(
    settings: Settings,
    outbox: HuntingOutbox,
    ledger: Ledger,
    uploader: Uploader,
    now: datetime,
    *,
    legacy: MessageQueue | None = None,
    pool: Executor | None = None,
) -> ShipReport:
    """``legacy``: the hunting queue an earlier version wrote, emptied into the outbox first."""
    if not settings.hunting_configured:
        return ShipReport()
    report = ship(
        outbox,
        ledger,
        uploader,
        rule_id=str(settings.hunting_dcr_immutable_id),
        stream=settings.hunting_stream_name,
        now=now,
        enrich_wait=timedelta(minutes=settings.hunting_enrich_wait_minutes),
        forwarded=frozenset(settings.forward_event_types),
        pool=pool,
        legacy=legacy,
    )
    if report.sent or report.failed:
        log.info(
            "hunting: %d row(s) sent, %d kept for a retry, %d waiting for delivery",
            report.sent,
            report.failed,
            report.deferred,
        )
    return report
