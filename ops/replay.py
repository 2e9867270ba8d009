"""Moving dead-lettered and poison events back onto their queue (``python -m shared replay``).

A replayed event starts afresh: its age and failure count are reset (so the maximum age does
not kill it again at once) and its ledger entry is reopened — unless the ledger says it was
delivered meanwhile, in which case it is skipped: replay never makes a second alert.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.config import Settings
from shared.delivery.deadletter import DeadLetters
from shared.delivery.ledger import Entry, Ledger
from shared.tasks import QueuedEvent, parse_task


@dataclass(frozen=True)
class Candidate:
    source: str  # "dead-letter" or the poison queue's name
    event_id: str
    reason: str
    queue: str  # where it goes back to
    text: str
    handle: Any  # the dead letter's id, or the received poison message


def _fresh(text: str, now: datetime) -> str:
    task = parse_task(text)
    update: dict[str, Any] = {"first_received_at": now, "failures": 0, "attempt": 0}
    if isinstance(task, QueuedEvent):
        update["tickets"] = {}
    return task.model_copy(update=update).to_text()


def _event_id(text: str) -> str:
    try:
        task = parse_task(text)
    except ValueError:
        return "?"
    return task.event.id if isinstance(task, QueuedEvent) else f"{task.kind} task"


def candidates(
    settings: Settings,
    dead: DeadLetters,
    sources: set[str],
    raw_queue: Callable[[str], Any],
    *,
    peek: bool = False,
) -> Iterator[Candidate]:
    """What could be replayed. ``raw_queue(name)`` is a queue client without message decoding (a
    poison message need not be valid base64). ``peek`` (dry run) only looks at poison messages
    (at most 32 per queue), because receiving one hides it from a real replay for five minutes."""
    if "dead" in sources:
        for letter in dead.all():
            yield Candidate(
                "dead-letter",
                letter.event_id,
                letter.reason,
                letter.queue or settings.events_queue_name,
                letter.message,
                letter.event_id,
            )
    if "poison" in sources:
        from azure.core.exceptions import ResourceNotFoundError

        for queue in (settings.events_queue_name, settings.events_priority_queue_name):
            raw = raw_queue(f"{queue}-poison")
            try:
                received = (
                    list(raw.peek_messages(max_messages=32))
                    if peek
                    else list(raw.receive_messages(messages_per_page=32, visibility_timeout=300))
                )
            except ResourceNotFoundError:
                continue  # no poison queue yet: nothing ever failed there
            for msg in received:
                try:
                    text = base64.b64decode(msg.content, validate=True).decode("utf-8")
                except (binascii.Error, ValueError):
                    text = msg.content
                yield Candidate(
                    f"{queue}-poison", _event_id(text), "poison: failed maxDequeueCount times", queue, text, (raw, msg)
                )


def replay(
    enqueue: Callable[[str, str], object], ledger: Ledger, dead: DeadLetters, item: Candidate, now: datetime
) -> str:
    """Put one candidate back; returns 'replayed' or why it was skipped."""
    if item.event_id not in ("?",) and not item.event_id.endswith(" task") and not ledger.reopen(item.event_id):
        outcome = "skipped: already delivered"
    else:
        enqueue(item.queue, _fresh(item.text, now))
        outcome = "replayed"
    if item.source == "dead-letter":
        dead.delete(item.handle)
    else:
        raw, msg = item.handle
        raw.delete_message(msg)
    return outcome


def why_not(event_id: str, entry: Entry | None) -> str:
    """Why ``replay --id`` found nothing for this event: replay only moves what was dead-lettered
    or poisoned, so say where the event is instead of a bare "nothing matched"."""
    if entry is None:
        return (
            f"{event_id}: not in the dead letters, the poison queues or the ledger "
            "(an id this connector never received, or one purged by retention)"
        )
    if entry.state.value == "dead_lettered":
        return f"{event_id}: dead-lettered, but no longer in the dead letters (replayed already, or purged)"
    detail = f": {entry.reason}" if entry.reason else ""
    if entry.final:
        return (
            f"{event_id}: not dead-lettered — its outcome is final ({entry.state.value}{detail}); "
            "replay only moves dead-lettered and poison events"
        )
    return f"{event_id}: not dead-lettered — still in delivery ({entry.state.value}); it needs no replay"
