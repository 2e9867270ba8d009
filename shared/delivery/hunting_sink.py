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

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.delivery.ledger import Ledger
from shared.delivery.message import QueuedEvent
from shared.hunting import row
from shared.storage import MessageQueue

log = logging.getLogger(__name__)
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


def _ids(ledger: Ledger, event_id: str) -> tuple[bool, str | None, str | None]:
    """(final, machine id, alert id) as far as delivery knows."""
    entry = ledger.get(event_id)
    if entry is None:
        return False, None, None
    alert = entry.alert_id or None
    into = entry.coalesced_into or ""
    if not alert and into.startswith("event "):  # coalesced before the leader's alert existed
        leader = ledger.get(into.removeprefix("event "))
        alert = leader.alert_id if leader else None
    return entry.final, entry.machine_id or None, alert


@dataclass(frozen=True)
class Target:
    """Where rows go and how long a row may wait for its delivery's ids."""

    rule_id: str
    stream: str
    enrich_wait: timedelta
    retry_in: int = 60
    forwarded: frozenset[str] | None = None


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
) -> ShipReport:
    """One drain of the hunting queue (``queue`` decodes base64 like the host does)."""
    target = Target(rule_id, stream, enrich_wait, retry_in, forwarded)
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
        done = False
        for msg in page:
            if msg.id in seen:  # released back already: this run has seen the whole queue
                queue.update_message(msg, visibility_timeout=target.retry_in)
                done = True
                continue
            seen.add(msg.id)
            report.received += 1
            task = QueuedEvent.model_validate_json(msg.content)
            delivered = target.forwarded is None or task.event.type in target.forwarded
            final, machine, alert = _ids(ledger, task.event.id) if delivered else (True, None, None)
            if not final and now - task.first_received_at < target.enrich_wait:
                report.deferred += 1  # back in ``retry_in`` seconds, with better ids by then
                queue.update_message(msg, visibility_timeout=target.retry_in)
                continue
            batch.append((msg, row(task.event, machine_id=machine, alert_id=alert)))
        if done or report.received >= max_rows:
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
    for msg, r in batch:
        if r["EventId"] in failed_ids:
            report.failed += 1
            queue.update_message(msg, visibility_timeout=target.retry_in)  # kept: a later run sends it
            continue
        try:
            queue.delete_message(msg)
        except ResourceNotFoundError:  # its receipt expired: it will be shipped again (a duplicate, not a loss)
            report.redelivered += 1
        report.sent += 1
    if report.failed:
        log.warning(
            "hunting: %d row(s) not accepted, kept for the next run: %s", report.failed, "; ".join(report.errors)
        )
