"""Queue messages: a redacted event to deliver, or a follow-up task (note on an alert, tag an incident).

Only the parsed :class:`~shared.events.Envelope` is ever serialised, so no PII value or prompt
text is written to storage. ``first_received_at`` travels with every re-enqueued copy, so a
retry keeps its age (the delivery gives up after ``MAX_EVENT_AGE_HOURS``); ``tickets`` are the
pacing slots this event holds (see ``shared.delivery.pacing``); ``trace`` is the W3C
``traceparent`` of the webhook request that queued it (only when telemetry is on), so every
delivery attempt joins that request's trace (``shared.telemetry``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.events import Envelope, UtcDatetime

SCHEMA_VERSION = 1


class _Task(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_version: int = Field(default=SCHEMA_VERSION, alias="v")
    first_received_at: UtcDatetime
    attempt: int = 0
    failures: int = 0

    def to_text(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class QueuedEvent(_Task):
    kind: Literal["event"] = "event"
    event: Envelope
    received_at: UtcDatetime
    tickets: dict[str, UtcDatetime] = Field(default_factory=dict)
    trace: str | None = None

    @classmethod
    def new(cls, event: Envelope, now: datetime, trace: str | None = None) -> QueuedEvent:
        return cls(event=event, received_at=now, first_received_at=now, trace=trace)


class NoteTask(_Task):
    """Write "N more violations since …" on a coalesced alert."""

    kind: Literal["note"] = "note"
    group: str
    token: str = ""  # the group's ``note_id`` it was sent for: a note the group no longer expects is dropped


class TagTask(_Task):
    """Tag an incident (Noxys, AI Firewall) when it could not be done right after the alert — a
    transient failure, or an alert Defender had not yet correlated into an incident (then
    ``incident_id`` is empty and the alert is read again until it has one)."""

    kind: Literal["tag"] = "tag"
    incident_id: str = ""
    alert_id: str | None = None
    event_id: str | None = None


class ResponseTask(_Task):
    """Run the response rules for one event that reached an alert (its own, or one it joined).
    Everything the rules judge is in the task, so a redelivery judges exactly the same."""

    kind: Literal["response"] = "response"
    event_id: str
    machine_id: str
    alert_id: str | None = None
    leader_event: str | None = None  # coalesced before the leader's alert existed: read it from the ledger
    situation: dict[str, Any]
    domain: str = ""
    user: str = ""
    device_name: str = ""


class ActionStatusTask(_Task):
    """Follow one machine action until Defender reports a final state."""

    kind: Literal["action_status"] = "action_status"
    event_id: str
    row: str
    action_id: str
    alert_id: str | None = None


class EventBundle(_Task):
    """Several events of one webhook request in one message: a 100-event request is then a few
    queue writes instead of a hundred before the webhook can answer. The worker that reads it
    delivers the events one after the other, each exactly as from its own message (a retry or a
    dead letter is already per event); an event that raises, and the ones after it, are queued one
    message each, so the host's retries and poison still apply per event. A bundle delivered again
    after a crash finds the events already done in the ledger (``duplicate``)."""

    kind: Literal["bundle"] = "bundle"
    events: list[QueuedEvent]

    @staticmethod
    def pack(texts: list[str], now: datetime) -> str:
        """The bundle's text from the events' own texts, so that its size is known exactly
        (the sum of theirs plus :func:`bundle_overhead`) without serialising anything twice."""
        stamp = json.dumps(now.isoformat().replace("+00:00", "Z"))
        return f'{{"v":{SCHEMA_VERSION},"kind":"bundle","first_received_at":{stamp},"events":[{",".join(texts)}]}}'


def bundle_overhead(now: datetime) -> int:
    """Characters a bundle adds around its events' texts (plus one comma between two events)."""
    return len(EventBundle.pack([], now))


AnyTask = QueuedEvent | NoteTask | TagTask | ResponseTask | ActionStatusTask | EventBundle
Task = Annotated[AnyTask, Field(discriminator="kind")]
_TASK: TypeAdapter[AnyTask] = TypeAdapter(Task)


def parse_task(text: str | bytes) -> AnyTask:
    """Messages written before ``kind`` existed are events."""
    doc = json.loads(text)
    if isinstance(doc, dict):
        doc.setdefault("kind", "event")
        doc.setdefault("first_received_at", doc.get("received_at"))
    return _TASK.validate_python(doc)
