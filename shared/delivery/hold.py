"""Events kept while the integration is switched off (``INTEGRATION_ENABLED=false``).

Switched off, the connector still verifies, accepts and keeps every event — it only makes no
Defender call. Each event waits here, ordered by when it was received; switched back on, the
``release_held_events`` timer puts them back on their queue oldest first (a fresh age, so the
time spent waiting never counts against ``MAX_EVENT_AGE_HOURS``). Releasing enqueues before it
deletes, so a crash in between can only cause a duplicate message, which the ledger absorbs:
each event still becomes exactly one alert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.delivery.message import QueuedEvent
from shared.storage import EntityTable, table_key

PARTITION = "held"


class Held:
    def __init__(self, table: EntityTable) -> None:
        self._table = table

    def keep(self, task: QueuedEvent, queue: str) -> None:
        from azure.data.tables import UpdateMode

        row = f"{task.first_received_at:%Y%m%dT%H%M%S.%f}-{table_key(task.event.id)}"
        self._table.upsert_entity(
            {
                "PartitionKey": PARTITION,
                "RowKey": row,
                "event_id": task.event.id,
                "queue": queue,
                "message": task.to_text(),
            },
            mode=UpdateMode.REPLACE,
        )

    def count(self) -> int:
        return sum(1 for _ in self._table.query_entities(f"PartitionKey eq '{PARTITION}'", select=["RowKey"]))

    def release(self, send: Any, now: datetime, limit: int = 500) -> int:
        """Re-enqueue up to ``limit`` kept events, oldest first; returns how many."""
        rows = self._table.query_entities(f"PartitionKey eq '{PARTITION}'", results_per_page=limit)
        released = 0
        for row in rows:  # Table Storage returns a partition in RowKey order: oldest first
            task = QueuedEvent.model_validate_json(row["message"])
            send(
                row["queue"], task.model_copy(update={"first_received_at": now, "attempt": 0, "failures": 0}).to_text()
            )
            self._table.delete_entity(PARTITION, row["RowKey"])
            released += 1
            if released >= limit:
                break
        return released
