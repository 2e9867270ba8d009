"""Shipping hunting rows to ``NoxysInteractions_CL`` without ever slowing an alert.

The webhook writes each hunting-worthy event to its own queue (``HUNTING_QUEUE_NAME``, no
expiry) in the same step that queues it for delivery — so a row is as durable as the event and
costs the alert path nothing. A timer (``HUNTING_SCHEDULE``, every 30 s) drains that queue in
batches: it enriches each row with what delivery learned (the Defender machine id and alert id,
from the ledger), sends the batch with ``LogsIngestionClient.upload`` (which gzips and splits
into ≤ 1 MB calls; azure-core retries 429 with Retry-After and 5xx), and deletes only the
messages whose rows were accepted. A failed chunk leaves its messages on the queue; they come
back after their visibility timeout and are sent by a later run. Nothing is lost; an outage of
the ingestion endpoint only delays rows.

An event still being delivered is given up to ``HUNTING_ENRICH_WAIT_MINUTES`` to become final,
then shipped without the ids rather than held back for ever.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from shared.delivery.ledger import Ledger, LedgerState
from shared.delivery.message import QueuedEvent
from shared.facts import method
from shared.hunting import Delivered, row
from shared.storage import MessageQueue

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
VISIBILITY = 300  # seconds a received row stays hidden while it is being shipped (a run takes well under)
MAX_ROWS_PER_RUN = 2000


class Uploader(Protocol):
    def upload(self, rule_id: str, stream_name: str, logs: list[dict[str, Any]], **kwargs: Any) -> None: ...


@dataclass
class ShipReport:
    received: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    redelivered: int = 0
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
    factors = json.loads(entry.risk_factors) if entry.risk_factors else None
    known = Delivered(
        entry.machine_id or None, alert, state, method(entry.resolved_by), delay, entry.combined_risk, factors
    )
    return entry.final, known


@dataclass(frozen=True)
class Target:
    """Where rows go and how long a row may wait for its delivery's ids."""

    rule_id: str
    stream: str
    enrich_wait: timedelta
    retry_in: int = 60
    forwarded: frozenset[str] | None = None
    pool: Executor | None = None  # ledger reads and deletes, several at a time


def _each(target: Target, work: Callable[[T], R], items: list[T]) -> list[R]:
    """``work`` over ``items``, concurrently when the target has a pool: each is a storage round trip."""
    if target.pool is None or len(items) < 2:
        return [work(i) for i in items]
    return list(target.pool.map(work, items))


def ship(
    queue: MessageQueue,
    ledger: Ledger,
    uploader: Uploader,
    *,
    rule_id: str,
    stream: str,
    now: datetime,
    enrich_wait: timedelta,
    max_rows: int = MAX_ROWS_PER_RUN,
    retry_in: int = 60,
    forwarded: frozenset[str] | None = None,
    pool: Executor | None = None,
) -> ShipReport:
    """One drain of the hunting queue (``queue`` decodes base64 like the host does)."""
    target = Target(rule_id, stream, enrich_wait, retry_in, forwarded, pool)
    report = ShipReport()
    batch = _collect(queue, ledger, target, now, max_rows, report)
    if batch:
        _upload(queue, uploader, target, batch, report)
    return report


def _collect(
    queue: MessageQueue, ledger: Ledger, target: Target, now: datetime, max_rows: int, report: ShipReport
) -> list[tuple[Any, dict[str, Any]]]:
    """The rows ready to ship, whole pages at a time (a page fetched and not processed would stay
    hidden for VISIBILITY seconds); rows still waiting for their delivery go back for later."""
    batch: list[tuple[Any, dict[str, Any]]] = []
    seen: set[str] = set()
    for page in queue.receive_messages(messages_per_page=32, visibility_timeout=VISIBILITY).by_page():
        messages = list(page)
        again = [m for m in messages if m.id in seen]  # released back already: this run has seen the whole queue
        _each(target, lambda m: queue.update_message(m, visibility_timeout=target.retry_in), again)
        fresh = [m for m in messages if m.id not in seen]
        seen.update(m.id for m in fresh)
        report.received += len(fresh)
        tasks = [QueuedEvent.model_validate_json(m.content) for m in fresh]

        def ids(task: QueuedEvent) -> tuple[bool, Delivered]:
            delivered = target.forwarded is None or task.event.type in target.forwarded
            return _ids(ledger, task.event.id) if delivered else (True, Delivered(correlation="not_forwarded"))

        later: list[Any] = []
        for msg, task, (final, known) in zip(fresh, tasks, _each(target, ids, tasks), strict=True):
            if not final and now - task.first_received_at < target.enrich_wait:
                report.deferred += 1  # back in ``retry_in`` seconds, with better ids by then
                later.append(msg)
                continue
            batch.append((msg, row(task.event, known)))
        _each(target, lambda m: queue.update_message(m, visibility_timeout=target.retry_in), later)
        if again or report.received >= max_rows:
            break
    return batch


def _upload(
    queue: MessageQueue, uploader: Uploader, target: Target, batch: list[tuple[Any, dict[str, Any]]], report: ShipReport
) -> None:
    """Send, then delete only what was accepted; a refused row stays for a later run."""
    from azure.core.exceptions import ResourceNotFoundError

    failed_ids: set[str] = set()

    def on_error(error: Any) -> None:
        failed_ids.update(str(r.get("EventId")) for r in error.failed_logs)
        report.errors.append(f"{error.error.__class__.__name__}: {str(error.error)[:200]}")

    uploader.upload(rule_id=target.rule_id, stream_name=target.stream, logs=[r for _, r in batch], on_error=on_error)
    refused = [msg for msg, r in batch if r["EventId"] in failed_ids]
    _each(target, lambda m: queue.update_message(m, visibility_timeout=target.retry_in), refused)  # a later run
    report.failed += len(refused)

    def delete(msg: Any) -> bool:
        try:
            queue.delete_message(msg)
        except ResourceNotFoundError:  # its receipt expired: it will be shipped again (a duplicate, not a loss)
            return False
        return True

    accepted = [msg for msg, r in batch if r["EventId"] not in failed_ids]
    deleted = _each(target, delete, accepted)
    report.sent += len(accepted)
    report.redelivered += deleted.count(False)
    if report.failed:
        log.warning(
            "hunting: %d row(s) not accepted, kept for the next run: %s", report.failed, "; ".join(report.errors)
        )
