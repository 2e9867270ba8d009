"""Queue trigger: one queued event → one Defender alert (via shared.delivery.forward).

The trigger only turns an Outcome into a queue action. Here: created / no device / no anchor
complete the message (logged with the reason); anything transient raises, so the host's
dequeue count retries it and, after maxDequeueCount, moves it to ``<queue>-poison`` where
nothing is lost.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.delivery.forward import Outcome

log = logging.getLogger(__name__)
bp = func.Blueprint()


class DeliveryFailed(Exception):
    """Raised to make the host retry the message (and eventually poison it)."""


def process(body: str, *, dequeue_count: int = 1) -> Outcome:
    from shared.config import get_settings
    from shared.delivery.forward import Kind, forward
    from shared.delivery.message import QueuedEvent
    from shared.wiring import defender_client

    queued = QueuedEvent.model_validate_json(body)
    event = queued.event
    settings = get_settings()
    outcome = forward(event, defender_client(), anchor_window=timedelta(minutes=settings.anchor_window_minutes))
    level = logging.INFO if outcome.kind in (Kind.CREATED, Kind.COALESCED) else logging.WARNING
    log.log(
        level, "event %s (%s) try %d: %s %s", event.id, event.type, dequeue_count, outcome.kind.value, outcome.detail
    )
    if outcome.kind in (Kind.RETRY_AFTER, Kind.DEAD_LETTER):
        raise DeliveryFailed(f"event {event.id}: {outcome.kind.value}: {outcome.detail}")
    return outcome


@bp.queue_trigger(arg_name="msg", queue_name="%EVENTS_QUEUE_NAME%", connection="AzureWebJobsStorage")
def forward_event(msg: func.QueueMessage) -> None:
    process(msg.get_body().decode("utf-8"), dequeue_count=msg.dequeue_count or 1)
