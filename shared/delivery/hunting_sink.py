"""Shipping hunting rows to ``NoxysInteractions_CL`` without ever slowing an alert.

The webhook keeps each hunting-worthy event as a row of the hunting outbox (a Table, see
``shared.delivery.hunting_outbox``) in the same step that queues it for delivery, so a row is as
durable as the event and costs the alert path nothing. A timer (``HUNTING_SCHEDULE``, every 30 s)
reads the outbox a page at a time: it enriches each row with what delivery learned (the Defender
machine id and alert id, from the ledger), sends the rows with ``LogsIngestionClient.upload``
(which gzips and splits into ≤ 1 MB calls; azure-core retries 429 with Retry-After and 5xx), and
deletes only the rows that were accepted, 100 to a transaction. A refused chunk's rows stay for
the next run. Nothing is lost; an outage of the ingestion endpoint only delays rows.

An event still being delivered is given up to ``HUNTING_ENRICH_WAIT_MINUTES`` to become final,
then shipped without the ids rather than held back for ever. Rows that an earlier version left
on the hunting queue (``HUNTING_QUEUE_NAME``) are moved into the outbox first, so an upgrade
loses none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from shared.delivery.hunting_outbox import HuntingOutbox, Waiting
from shared.delivery.ledger import Ledger, LedgerState
from shared.facts import method
from shared.hunting import Delivered, row
from shared.storage import MessageQueue
from shared.tasks import QueuedEvent

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
VISIBILITY = 300  # seconds a legacy queue message stays hidden while it is moved into the outbox
MAX_ROWS_PER_RUN = 2000
READ_AHEAD = 5  # rows read per run at most, in runs of MAX_ROWS: rows that wait for delivery are passed over
PAGE = 250  # rows whose ledger entries are read side by side


class Uploader(Protocol):
    def upload(self, rule_id: str, stream_name: str, logs: list[dict[str, Any]], **kwargs: Any) -> None: ...


@dataclass
class ShipReport:
    received: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    gone: int = 0  # accepted, but the row had already been deleted (a data-subject erasure meanwhile)
    migrated: int = 0  # moved from the hunting queue of an earlier version
    errors: list[str] = field(default_factory=list)


def _ids(ledger: Ledger, event_id: str) -> tuple[bool, Delivered]:
    """(final, what delivery learned) as far as the ledger knows."""
    entry = ledger.get(event_id)
    if entry is None:
        return False, Delivered()
    alert = entry.alert_id or None
    into = entry.coalesced_into or ""
    if not alert and into.startswith("event "):  # coalesced before the leader's alert existed
        leader = ledger.get(into.removeprefix("event "))
        alert = leader.alert_id if leader else None
    delay = (
        round(entry.alert_at - entry.accepted_at, 3)
        if entry.state == LedgerState.ALERT_CREATED and entry.alert_at and entry.accepted_at
        else None
    )
    state = entry.state.value if entry.final else ""
    factors = json.loads(entry.risk.risk_factors) if entry.risk.risk_factors else None
    known = Delivered(
        entry.machine_id or None, alert, state, method(entry.resolved_by), delay, entry.risk.combined_risk, factors
    )
    return entry.final, known


@dataclass(frozen=True)
class Target:
    """Where rows go and how long a row may wait for its delivery's ids."""

    rule_id: str
    stream: str
    enrich_wait: timedelta
    forwarded: frozenset[str] | None = None
    pool: Executor | None = None  # ledger reads, several at a time


def _each(target: Target, work: Callable[[T], R], items: list[T]) -> list[R]:
    """``work`` over ``items``, concurrently when the target has a pool: each is a storage round trip."""
    if target.pool is None or len(items) < 2:
        return [work(i) for i in items]
    return list(target.pool.map(work, items))


def ship(
    outbox: HuntingOutbox,
    ledger: Ledger,
    uploader: Uploader,
    *,
    rule_id: str,
    stream: str,
    now: datetime,
    enrich_wait: timedelta,
    max_rows: int = MAX_ROWS_PER_RUN,
    forwarded: frozenset[str] | None = None,
    pool: Executor | None = None,
    legacy: MessageQueue | None = None,
) -> ShipReport:
    """One run: move what an earlier version queued, then ship up to ``max_rows`` ready rows."""
    target = Target(rule_id, stream, enrich_wait, forwarded, pool)
    report = ShipReport()
    if legacy is not None:
        report.migrated = migrate(legacy, outbox, max_rows, pool)
    batch = _collect(outbox, ledger, target, now, max_rows, report)
    if batch:
        _upload(outbox, uploader, target, batch, report)
    return report


def migrate(queue: MessageQueue, outbox: HuntingOutbox, limit: int, pool: Executor | None = None) -> int:
    """Move rows an earlier version left on the hunting queue into the outbox (written before the
    messages are deleted, so a crash in between only writes a row twice, onto the same key)."""
    from azure.core.exceptions import ResourceNotFoundError

    moved = 0
    try:
        for page in queue.receive_messages(messages_per_page=32, visibility_timeout=VISIBILITY).by_page():
            messages = list(page)
            outbox.put([(QueuedEvent.model_validate_json(m.content), str(m.content)) for m in messages])
            if pool is None:
                for m in messages:
                    queue.delete_message(m)
            else:
                list(pool.map(queue.delete_message, messages))
            moved += len(messages)
            if moved >= limit:
                break
    except ResourceNotFoundError:  # no such queue: nothing was ever left there
        return moved
    if moved:
        log.info("hunting: moved %d row(s) from the hunting queue into the outbox", moved)
    return moved


def _collect(
    outbox: HuntingOutbox, ledger: Ledger, target: Target, now: datetime, max_rows: int, report: ShipReport
) -> list[tuple[Waiting, dict[str, Any]]]:
    """The rows ready to ship, oldest first; rows still waiting for their delivery stay for later."""
    batch: list[tuple[Waiting, dict[str, Any]]] = []

    def ids(w: Waiting) -> tuple[bool, Delivered]:
        delivered = target.forwarded is None or w.task.event.type in target.forwarded
        return _ids(ledger, w.task.event.id) if delivered else (True, Delivered(correlation="not_forwarded"))

    page: list[Waiting] = []

    def judge(rows: list[Waiting]) -> None:
        for w, (final, known) in zip(rows, _each(target, ids, rows), strict=True):
            if not final and now - w.task.first_received_at < target.enrich_wait:
                report.deferred += 1  # a later run, with better ids by then
                continue
            batch.append((w, row(w.task.event, known)))

    for waiting in outbox.read():
        report.received += 1
        page.append(waiting)
        if len(page) == PAGE:
            judge(page)
            page = []
            if len(batch) >= max_rows or report.received >= READ_AHEAD * max_rows:
                break
    else:
        judge(page)
    return batch[:max_rows]


def _upload(
    outbox: HuntingOutbox,
    uploader: Uploader,
    target: Target,
    batch: list[tuple[Waiting, dict[str, Any]]],
    report: ShipReport,
) -> None:
    """Send, then delete only what was accepted; a refused row stays for a later run."""
    failed_ids: set[str] = set()

    def on_error(error: Any) -> None:
        failed_ids.update(str(r.get("EventId")) for r in error.failed_logs)
        report.errors.append(f"{error.error.__class__.__name__}: {str(error.error)[:200]}")

    uploader.upload(rule_id=target.rule_id, stream_name=target.stream, logs=[r for _, r in batch], on_error=on_error)
    report.failed += sum(1 for _, r in batch if r["EventId"] in failed_ids)
    accepted = [w for w, r in batch if r["EventId"] not in failed_ids]
    still_there = outbox.remove(accepted)
    report.sent += len(accepted)
    report.gone += len(accepted) - still_there
    if report.failed:
        log.warning(
            "hunting: %d row(s) not accepted, kept for the next run: %s", report.failed, "; ".join(report.errors)
        )
