"""The pattern windows behind the combined risk score and the response rules' ``repeat``: recent
events per device and per user, in Table Storage, shared by every instance.

One row per observation (``o-<ms>-<event>``) in a partition per subject (``d|<device>``,
``u|<user>``): writing it never conflicts, so a storm on one laptop costs no ETag retries, and a
redelivered event writes the same row again, so it is never counted twice. A window is one
range query on the partition (at most :data:`MAX_ROWS` rows read: counts above that read as that
many), read only when something needs it (an event about to raise an alert, or rules that count
repeats). A user's platforms are remembered longer, in one merged row of the user's partition (read
by the same query), for "a platform this user never used before". Rows are purged by retention
(``PATTERNS_RETENTION_DAYS``).

Observations are written behind, like the counters: kept in memory and written every
:data:`FLUSH_SECONDS` (a window's own partitions before this process reads it, and all at exit).
A partition with ``shared.storage.TRANSACTION_FROM`` rows or more is written in one transaction per 100 (a
storm on one laptop is a few writes for its device's window, not one per event); fewer rows go as
single upserts, which cost the SDK less CPU than a small transaction. A coalesced event costs no
round trip on its own delivery path for the windows. What a process had not written when it was
killed is missing from the windows (at most a second of observations: a risk heuristic
undercounts, no event is affected); rows that could not be written are tried again at the next
flush (up to :data:`MAX_PENDING`, then the oldest are dropped, logged).

The store is an aid, never a gate: when it cannot be read, the score is the event's alone and the
reason is logged — an alert is never held back for it.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

from shared.risk import Patterns
from shared.storage import BatchTable, table_key, write_groups

log = logging.getLogger(__name__)
WINDOW_SECONDS = 86400.0
MAX_ROWS = 1000
PLATFORMS_ROW = "platforms"
FLUSH_SECONDS = 1.0
MAX_PENDING = 20_000  # rows kept while the table cannot be written (~200 bytes each)


@dataclass(frozen=True)
class Observation:
    event_id: str
    at: float
    device: str  # the device as Noxys identified it ("" when none)
    user: str  # lower-cased e-mail or user id ("" when none)
    platform: str
    pii_types: str  # comma-separated type codes


def _row_key(o: Observation) -> str:
    return f"o-{int(o.at * 1000):015d}-{hashlib.sha256(o.event_id.encode()).hexdigest()[:16]}"


def partition(kind: str, subject: str) -> str:
    return table_key(f"{kind}|{subject}")


def _subjects(o: Observation) -> list[tuple[str, str]]:
    return [(k, s) for k, s in (("d", o.device), ("u", o.user)) if s]


def _platform_property(platform: str) -> str:
    return "p_" + hashlib.sha256(platform.encode()).hexdigest()[:16]


def _row(pk: str, o: Observation) -> dict[str, Any]:
    return {
        "PartitionKey": pk,
        "RowKey": _row_key(o),
        "event_id": o.event_id,
        "at": o.at,
        "platform": o.platform,
        "pii_types": o.pii_types,
    }


class PatternStore:
    def __init__(self, table: BatchTable, pool: Executor | None = None, *, interval: float = FLUSH_SECONDS) -> None:
        self._table = table
        self._pool = pool
        self._interval = interval
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # the pending rows
        self._writing = threading.Lock()  # one flush at a time: a read after flush() sees every row
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def _all(self, calls: list[Callable[[], Any]]) -> list[Any]:
        if self._pool is None or len(calls) < 2:
            return [c() for c in calls]
        return [f.result() for f in [self._pool.submit(c) for c in calls]]

    def record(self, o: Observation) -> None:
        """Count ``o`` in its device's and its user's windows (a redelivery counts nothing more):
        written by the next flush, within :data:`FLUSH_SECONDS`."""
        rows = [_row(partition(k, s), o) for k, s in _subjects(o)]
        with self._lock:
            self._pending += rows
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._run, name="patterns-flush", daemon=True)
                self._flusher.start()
                atexit.register(self.close)

    def flush(self, partitions: frozenset[str] | None = None) -> None:
        """Write the pending rows now (only those of ``partitions`` when given: a window read needs
        its own partitions written, and the rest batch better at the next timed flush), each
        partition's in transactions of up to 100 (upserts of rows the event fixes: rewriting one is
        harmless). A group that fails is kept for the next flush; logged, never raised."""
        with self._writing:
            with self._lock:
                if partitions is None:
                    pending, self._pending = self._pending, []
                else:
                    pending = [r for r in self._pending if r["PartitionKey"] in partitions]
                    self._pending = [r for r in self._pending if r["PartitionKey"] not in partitions]
            if not pending:
                return
            failed: list[dict[str, Any]] = []

            def write(group: list[dict[str, Any]]) -> None:
                from azure.data.tables import UpdateMode

                try:
                    if len(group) == 1 or self._stop.is_set():  # closing: perhaps at exit, where the
                        for row in group:  # SDK can no longer start a transaction's threads
                            self._upsert(row)
                    else:
                        self._table.submit_transaction([("upsert", r, {"mode": UpdateMode.REPLACE}) for r in group])
                except Exception as exc:  # the store is an aid, never a gate
                    log.warning("patterns: %d observation(s) not written yet: %s", len(group), exc.__class__.__name__)
                    failed.extend(group)

            for group in write_groups(pending):  # one by one: a flush may run at exit, after the pool is gone
                write(group)
            if failed:
                with self._lock:
                    self._pending = failed + self._pending
                    if len(self._pending) > MAX_PENDING:
                        dropped = len(self._pending) - MAX_PENDING
                        log.warning("patterns: %d observation(s) dropped (the table was unwritable)", dropped)
                        self._pending = self._pending[dropped:]

    def waiting(self) -> int:
        """Observations kept for the next flush."""
        with self._lock:
            return len(self._pending)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()

    def read(self, o: Observation, *, recorded: bool = True) -> Patterns:
        """The windows around ``o`` (this process's observations written first); ``recorded``
        False (``explain``): as they would be with it in."""
        try:
            self.flush(frozenset(partition(k, s) for k, s in _subjects(o)))
            return self._read(o, recorded)
        except Exception as exc:  # the store is an aid, never a gate
            log.warning("patterns unavailable for event %s: %s", o.event_id, exc.__class__.__name__)
            return Patterns(available=False, why=f"pattern store unreachable ({exc.__class__.__name__})")

    def _read(self, o: Observation, recorded: bool) -> Patterns:
        subjects = _subjects(o)
        reads = [partial(self._window, partition(k, s), o.at, with_platforms=k == "u") for k, s in subjects]
        found = dict(zip([k for k, _ in subjects], self._all(list(reads)), strict=True))
        device_rows, user_rows = found.get("d", []), found.get("u", [])
        known = next((r for r in user_rows if r.get("RowKey") == PLATFORMS_ROW), None)
        user_rows = [r for r in user_rows if r.get("RowKey") != PLATFORMS_ROW]
        if not recorded:
            mine = {"at": o.at, "platform": o.platform, "pii_types": o.pii_types, "event_id": o.event_id}
            device_rows, user_rows = device_rows + [mine] * bool(o.device), user_rows + [mine] * bool(o.user)
        earlier = {str(r.get("platform")) for r in user_rows if r.get("event_id") != o.event_id}
        unknown = bool(o.platform) and _platform_property(o.platform) not in (known or {})
        if recorded and o.user and unknown:
            self._remember_platform(partition("u", o.user), o)  # only a platform not remembered yet
        return Patterns(
            device_seen=tuple(float(r["at"]) for r in device_rows),
            user_seen=tuple(float(r["at"]) for r in user_rows),
            user_pii_types=frozenset(c for r in user_rows for c in str(r.get("pii_types") or "").split(",") if c),
            user_platforms=frozenset(str(r["platform"]) for r in user_rows if r.get("platform")),
            new_platform=known is not None and unknown and o.platform not in earlier,
        )

    def _upsert(self, row: dict[str, Any]) -> None:
        """An upsert of a row whose key the event fixes: a redelivered event rewrites its own row, so
        it is never counted twice (and an upsert costs the SDK less than an insert that may fail)."""
        from azure.data.tables import UpdateMode

        self._table.upsert_entity(row, mode=UpdateMode.REPLACE)

    def _window(self, pk: str, now: float, *, with_platforms: bool = False) -> list[dict[str, Any]]:
        """The partition's last 24 h (and, for a user, the platforms row in the same query)."""
        lo = f"o-{int((now - WINDOW_SECONDS) * 1000):015d}"
        hi = f"o-{int((now + 60) * 1000):015d}"
        also = " or RowKey eq @platforms" if with_platforms else ""
        query = f"PartitionKey eq @pk and ( RowKey ge @lo and RowKey lt @hi{also} )"  # @names whole words
        values = {"pk": pk, "lo": lo, "hi": hi, "platforms": PLATFORMS_ROW}
        rows = self._table.query_entities(query, parameters=values, results_per_page=MAX_ROWS)
        out: list[dict[str, Any]] = []
        for page in rows.by_page():
            out.extend({**r, "RowKey": r.get("RowKey")} for r in page)
            break  # one page: counts above MAX_ROWS read as MAX_ROWS
        return out

    def _remember_platform(self, pk: str, o: Observation) -> None:
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": pk, "RowKey": PLATFORMS_ROW, _platform_property(o.platform): o.at}
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)  # a merge: concurrent writers never conflict
