"""The queue message: a redacted, validated envelope plus delivery bookkeeping.

Only the parsed :class:`~shared.events.Envelope` is ever serialised, so no PII value or prompt
text is written to storage. ``attempt`` and ``first_received_at`` travel with the message so
that re-enqueued retries keep their age (the delivery core gives up after a maximum age).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.events import Envelope, UtcDatetime

SCHEMA_VERSION = 1


class QueuedEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = Field(default=SCHEMA_VERSION, alias="v")
    event: Envelope
    received_at: UtcDatetime
    first_received_at: UtcDatetime | None = None
    attempt: int = 0

    def to_text(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def new(cls, event: Envelope, now: datetime) -> QueuedEvent:
        return cls.model_validate({"v": SCHEMA_VERSION, "event": event, "received_at": now, "first_received_at": now})
