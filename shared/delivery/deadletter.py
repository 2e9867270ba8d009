"""Dead letters: events the connector gave up on, with the reason, kept until replayed.

A Table rather than a queue, so that an operator can list them and replay them by id or by
reason (``python -m shared replay``). The stored message is the redacted queue message: no
PII value is ever kept here either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from shared.storage import EntityTable, table_key

PARTITION = "deadletter"


@dataclass(frozen=True)
class DeadLetter:
    event_id: str
    reason: str
    error_code: str
    correlation_id: str
    dead_at: float
    queue: str
    message: str


class DeadLetters:
    def __init__(self, table: EntityTable) -> None:
        self._table = table

    def put(self, letter: DeadLetter) -> None:
        from azure.data.tables import UpdateMode

        self._table.upsert_entity(
            {
                "PartitionKey": PARTITION,
                "RowKey": table_key(letter.event_id),
                "event_id": letter.event_id,
                "reason": letter.reason[:2000],
                "error_code": letter.error_code,
                "correlation_id": letter.correlation_id,
                "dead_at": letter.dead_at,
                "queue": letter.queue,
                "message": letter.message,
            },
            mode=UpdateMode.REPLACE,
        )

    def all(self) -> Iterator[DeadLetter]:
        for e in self._table.query_entities(f"PartitionKey eq '{PARTITION}'"):
            yield DeadLetter(
                e["event_id"],
                e.get("reason", ""),
                e.get("error_code", ""),
                e.get("correlation_id", ""),
                float(e.get("dead_at") or 0),
                e.get("queue", ""),
                e["message"],
            )

    def delete(self, event_id: str) -> None:
        self._table.delete_entity(PARTITION, table_key(event_id))

    def count(self) -> int:
        return sum(1 for _ in self._table.query_entities(f"PartitionKey eq '{PARTITION}'", select=["RowKey"]))
