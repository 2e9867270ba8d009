"""Counters for status: what arrived, what was refused or ignored, what each delivery became.

One Table row per (hour, counter, shard); an increment picks a random shard so that parallel
workers rarely contend on one ETag. Reading sums the rows of the hours asked for. Best effort
by design: a counter that fails to write is logged, never allowed to fail a delivery.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.storage import Codec, Contended, EntityTable, update_if_match

log = logging.getLogger(__name__)
SHARDS = 8
MARKS = "marks"


def _hour(t: datetime) -> str:
    return t.strftime("%Y%m%d%H")


@dataclass(frozen=True)
class CountRow:
    """One shard of one counter in one hour (PartitionKey ``hour``, RowKey ``name|shard``)."""

    hour: str
    shard: str
    name: str = ""
    count: int = 0


@dataclass(frozen=True)
class MarkRow:
    """A named mark (PartitionKey ``marks``, RowKey ``name``)."""

    name: str
    value: str = ""


_COUNT = Codec(CountRow, lambda c: (c.hour, c.shard), in_key=("hour", "shard"))
_MARK = Codec(MarkRow, lambda m: (MARKS, m.name), in_key=("name",))


class Counters:
    def __init__(self, table: EntityTable) -> None:
        self._table = table

    def add(self, name: str, now: datetime, n: int = 1) -> None:
        from azure.core.exceptions import AzureError

        if n <= 0:
            return
        pk, rk = _hour(now), f"{name}|{random.randrange(SHARDS)}"  # noqa: S311 - spreading load, not crypto

        def count(row: dict[str, Any] | None) -> dict[str, Any]:
            before = _COUNT.record(row, hour=pk, shard=rk).count if row else 0
            return _COUNT.entity(CountRow(pk, rk, name, before + n))

        try:
            update_if_match(self._table, pk, rk, count, tries=10)
        except (AzureError, Contended) as exc:
            log.warning("counter %s not updated: %s", name, exc.__class__.__name__)

    def totals(self, now: datetime, hours: int = 24) -> dict[str, int]:
        since = _hour(now - timedelta(hours=hours - 1))
        out: dict[str, int] = {}
        rows = self._table.query_entities(
            "PartitionKey ge @since and PartitionKey lt @marks", parameters={"since": since, "marks": MARKS}
        )
        for e in rows:
            row = _COUNT.record(e, hour=str(e["PartitionKey"]), shard=str(e["RowKey"]))
            out[row.name] = out.get(row.name, 0) + row.count
        return out

    def mark(self, name: str, value: str) -> None:
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        try:
            self._table.upsert_entity(_MARK.entity(MarkRow(name, value)), mode=UpdateMode.REPLACE)
        except AzureError as exc:
            log.warning("mark %s not updated: %s", name, exc.__class__.__name__)

    def marks(self) -> dict[str, str]:
        rows = self._table.query_entities("PartitionKey eq @marks", parameters={"marks": MARKS})
        marks = (_MARK.record(e, name=str(e["RowKey"])) for e in rows)
        return {m.name: m.value for m in marks}


class BufferedCounters:
    """Counting off the request path: increments are summed in memory, per hour, and written by a
    background flush every ``interval`` seconds (and before every read, and at exit), one Table
    write per counter name per flush instead of two round trips per increment. A webhook answer
    then costs its queue write and nothing else.

    Best effort, like the counters themselves: what a process had not flushed when it was killed
    is lost from status (at most ``interval`` seconds of counts), never an event.
    """

    def __init__(self, counters: Counters, *, interval: float = 5.0) -> None:
        self._counters = counters
        self._interval = interval
        self._pending: dict[tuple[str, str], tuple[datetime, int]] = {}
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, name: str, now: datetime, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            key = (_hour(now), name)
            at, count = self._pending.get(key, (now, 0))
            self._pending[key] = (at, count + n)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._run, name="counters-flush", daemon=True)
                self._flusher.start()
                atexit.register(self.flush)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for (_, name), (at, count) in pending.items():
            self._counters.add(name, at, count)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except Exception as exc:  # a flush must never kill the flusher
                log.warning("counters not flushed: %s", exc.__class__.__name__)

    def close(self) -> None:
        self._stop.set()
        self.flush()

    # reads see every increment of this process
    def totals(self, now: datetime, hours: int = 24) -> dict[str, int]:
        self.flush()
        return self._counters.totals(now, hours)

    def mark(self, name: str, value: str) -> None:
        self._counters.mark(name, value)

    def marks(self) -> dict[str, str]:
        return self._counters.marks()
