"""The hunting rows waiting to be shipped: a Table (``<TABLE_PREFIX>HuntingOutbox``), not a queue.

A queue message must be deleted one by one once its row is accepted, and a delete is the most
expensive thing a queue does (on Azurite it scans the queue: ~10 ms each at 2,000 rows, so the
shipper could never pass ~100 rows/s). A Table takes 100 rows of one partition in one entity
group transaction, for writing and for deleting, and returns 1,000 rows per query page. So the
webhook writes a request's rows in one transaction per 100, and the timer reads pages and deletes
what Log Analytics accepted in transactions of 100.

Keys: the partition is the minute the webhook accepted the event (``YYYYMMDDHHMM``, so reading in
key order is reading oldest first and one request's rows share a partition), the row is the event
id. A sender's retry of the same event in the same minute rewrites its row instead of adding a
second one. Each row keeps the redacted queued event (never a PII value or prompt text) and the
user, which a data-subject request searches. Rows never expire: they are deleted once shipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.facts import facts
from shared.storage import BatchTable, Codec, QueueUnavailable, delete_if_there, table_key, write_groups
from shared.tasks import QueuedEvent

log = logging.getLogger(__name__)
TABLE = "HuntingOutbox"
CHUNK = 30_000  # characters per string property (a Table string holds 64 KiB: 32,768 UTF-16 units)
TASK_PROPERTIES = ("task", "task1", "task2")  # a queued event is at most 48 KiB of text: two chunks


def partition_of(at: datetime) -> str:
    return at.strftime("%Y%m%d%H%M")


@dataclass(frozen=True)
class Waiting:
    """One row read back: its keys (to delete it) and the queued event."""

    partition: str
    row: str
    task: QueuedEvent


@dataclass(frozen=True)
class OutboxRow:
    """The stored row (its property names are the table's): the redacted queued event's text in up
    to three chunks (an empty chunk is not stored), and what a data-subject request searches."""

    partition: str
    row: str
    event_id: str = ""
    user: str = ""
    user_id: str = ""
    email: str = ""
    task: str | None = None
    task1: str | None = None
    task2: str | None = None

    @property
    def text(self) -> str:
        return "".join(part or "" for part in (self.task, self.task1, self.task2))


_CODEC = Codec(OutboxRow, lambda r: (r.partition, r.row), in_key=("partition", "row"))


def entity(task: QueuedEvent, text: str, partition: str) -> dict[str, Any]:
    if len(text) > CHUNK * len(TASK_PROPERTIES):
        raise ValueError(f"event {task.event.id}: queued text over {CHUNK * len(TASK_PROPERTIES)} characters")
    kept = facts(task.event)
    chunks = [text[i * CHUNK : (i + 1) * CHUNK] or None for i in range(len(TASK_PROPERTIES))]
    row = OutboxRow(partition, table_key(task.event.id), task.event.id, kept.user, kept.user_id, kept.email, *chunks)
    return _CODEC.entity(row)


def _record(e: Any) -> OutboxRow:
    return _CODEC.record(e, partition=str(e["PartitionKey"]), row=str(e["RowKey"]))


class HuntingOutbox:
    """Writes, reads and deletes waiting rows; ``pool`` runs a request's transactions side by side."""

    def __init__(self, table: BatchTable, pool: Executor | None = None) -> None:
        self._table = table
        self._pool = pool

    def _each(self, work: Callable[[list[dict[str, Any]]], int], groups: list[list[dict[str, Any]]]) -> int:
        if self._pool is None or len(groups) < 2:
            return sum(work(g) for g in groups)
        return sum(self._pool.map(work, groups))

    def put(self, rows: list[tuple[QueuedEvent, str]], partition: str | None = None) -> None:
        """Durably keep ``rows`` (each queued event with its text), or raise QueueUnavailable (the
        webhook then answers 503 for the whole request). ``partition``: the minute to file them
        under; by default each event's own ``received_at``."""
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        entities = [entity(task, text, partition or partition_of(task.received_at)) for task, text in rows]

        def write(group: list[dict[str, Any]]) -> int:  # replace: a shorter rewrite leaves no stale chunk
            if len(group) == 1:
                self._table.upsert_entity(group[0], mode=UpdateMode.REPLACE)
            else:
                self._table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in group])
            return len(group)

        try:
            self._each(write, write_groups(entities))
        except AzureError as exc:
            raise QueueUnavailable(f"table {TABLE}: {exc.__class__.__name__}") from None

    def read(self) -> Iterator[Waiting]:
        """Every waiting row, oldest minute first, a page of 1,000 at a time."""
        for e in self._table.list_entities(results_per_page=1000):
            row = _record(e)
            yield Waiting(row.partition, row.row, QueuedEvent.model_validate_json(row.text))

    def remove(self, rows: list[Waiting]) -> int:
        """Delete shipped rows, 100 to a transaction; a row already gone (erased in the meantime)
        does not stop the others. Returns how many were still there."""
        from azure.data.tables import TableTransactionError

        keys = [{"PartitionKey": w.partition, "RowKey": w.row} for w in rows]

        def one(key: dict[str, Any]) -> int:
            return 1 if delete_if_there(self._table, key["PartitionKey"], key["RowKey"]) else 0

        def delete(group: list[dict[str, Any]]) -> int:
            if len(group) == 1:
                return one(group[0])
            try:
                self._table.submit_transaction([("delete", k) for k in group])
            except TableTransactionError:  # all or nothing: one missing row fails the whole group
                return sum(one(k) for k in group)
            return len(group)

        return self._each(delete, write_groups(keys))

    def count(self, cap: int = 100_000) -> int:
        """Rows waiting (keys only; stops counting at ``cap``)."""
        n = 0
        for _ in self._table.list_entities(select=["PartitionKey"], results_per_page=1000):
            n += 1
            if n >= cap:
                break
        return n
