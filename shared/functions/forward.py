"""Queue triggers: the normal lane and the priority lane (Noxys critical alerts).

Thin on purpose: the delivery (``shared.delivery.forward``) decides and performs the queue
actions (re-enqueue with a delay, dead-letter) and returns an Outcome, which is logged here.
Only an unexpected storage error raises, so that the host retries the message and eventually
moves it to ``<queue>-poison``, where nothing is lost.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.outcome import Outcome

log = logging.getLogger(__name__)
bp = func.Blueprint()
QUIET = ("created", "coalesced", "duplicate", "noted", "tagged", "retry_after", "held", "responded", "bundle")


def process(body: str, *, priority: bool = False, dequeue_count: int = 1) -> Outcome:
    from shared import telemetry, wiring
    from shared.outcome import Kind

    settings = wiring.settings()
    queue = settings.events_priority_queue_name if priority else settings.events_queue_name
    trace, received = telemetry.carried(body)  # the webhook request's trace, joined by this delivery
    with telemetry.span("noxys.deliver", "consumer", trace, lane="priority" if priority else "normal") as span:
        outcome = wiring.delivery().handle(body, queue=queue, priority=priority)
        now = wiring.clock().now()
        for each in outcome.parts or (outcome,):  # a bundle counts as the events it delivered
            wiring.tally().count(f"outcome.{each.kind.value}")
            if each.kind == Kind.CREATED:
                telemetry.alert_created(received, now)
        telemetry.mark(span, outcome=telemetry.DELIVERED.get(outcome.kind.value, outcome.kind.value))
        if received is not None and outcome.kind == Kind.CREATED:  # the workbook's p50 / p95
            telemetry.mark(span, latency=(now - received).total_seconds())
    if any(each.kind == Kind.CREATED for each in outcome.parts or (outcome,)):
        wiring.counters().mark("last_alert_at", now.isoformat())
    level = logging.INFO if outcome.kind.value in QUIET else logging.WARNING
    log.log(level, "%s try %d: %s %s", _subject(body), dequeue_count, outcome.kind.value, outcome.detail)
    return outcome


def _subject(body: str) -> str:
    """'event <id> (<type>)' for the log line, without parsing the whole task twice on error."""
    try:
        doc = json.loads(body)
        if doc.get("kind", "event") == "event":
            return f"event {doc['event']['id']} ({doc['event']['type']})"
        return f"{doc['kind']} task"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unreadable message"


@bp.queue_trigger(arg_name="msg", queue_name="%EVENTS_QUEUE_NAME%", connection="AzureWebJobsStorage")
def forward_event(msg: func.QueueMessage) -> None:
    process(msg.get_body().decode("utf-8"), dequeue_count=msg.dequeue_count or 1)


@bp.queue_trigger(arg_name="msg", queue_name="%EVENTS_PRIORITY_QUEUE_NAME%", connection="AzureWebJobsStorage")
def forward_priority_event(msg: func.QueueMessage) -> None:
    process(msg.get_body().decode("utf-8"), priority=True, dequeue_count=msg.dequeue_count or 1)
