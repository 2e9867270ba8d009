"""Dead letters: events the connector gave up on, with the reason, kept until replayed.

A Table rather than a queue, so that an operator can list them and replay them by id or by
reason (``python -m shared replay``). The stored message is the redacted queue message: no
PII value is ever kept here either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from shared.storage import Codec, EntityTable, table_key

PARTITION = "deadletter"


@dataclass(frozen=True)
class DeadLetter:
    event_id: str
    reason: str = ""  # the defaults are what a row without the property reads as
    error_code: str = ""
    correlation_id: str = ""
    dead_at: float = 0.0
    queue: str = ""
    message: str = ""


_CODEC = Codec(DeadLetter, lambda d: (PARTITION, table_key(d.event_id)), limits={"reason": 2000})


class DeadLetters:
    def __init__(self, table: EntityTable) -> None:
        self._table = table

    def put(self, letter: DeadLetter) -> None:
        from azure.data.tables import UpdateMode

        self._table.upsert_entity(_CODEC.entity(letter), mode=UpdateMode.REPLACE)

    def all(self) -> Iterator[DeadLetter]:
        for e in self._table.query_entities("PartitionKey eq @partition", parameters={"partition": PARTITION}):
            yield _CODEC.record(e)

    def delete(self, event_id: str) -> None:
        self._table.delete_entity(PARTITION, table_key(event_id))

    def count(self) -> int:
        rows = self._table.query_entities(
            "PartitionKey eq @partition", parameters={"partition": PARTITION}, select=["RowKey"]
        )
        return sum(1 for _ in rows)
