"""The pattern windows behind the combined risk score and the response rules' ``repeat``: recent
events per device and per user, in Table Storage, shared by every instance.

Observations are **packed**: each flush writes, per partition (``d|<device>``, ``u|<user>``), one
row per time bucket of :data:`BUCKET_SECONDS` holding every observation of that flush in that
bucket (``o-<bucket start, ms>-<flush>-<n>``, the observations as a JSON list in :data:`PACK`).
A storm on twenty laptops is then one request per partition per flush, not one per event per
partition. The key is fresh (this process's random token and its flush number), so writing never
conflicts between instances and costs no ETag retries. A pack larger than :data:`PACK_CHARS` is
split into more rows (a string property holds at most 32K UTF-16 characters); a partition's rows
of one flush go in one transaction (one request) — several only when the flush straddles a bucket
boundary or a pack was split.

A redelivered event may land in another pack (or a write whose answer was lost be written again
under a new flush number), so a window counts each event id once: the key no longer does that. A
window is still one range query on the partition, its lower bound widened to the start of the
bucket that holds ``now - 24 h``, the observations outside the window filtered out in memory. At
most :data:`MAX_ROWS` observations are counted per window (above that they read as that many). A
user's platforms are remembered longer, in one merged row of the user's partition (read by the
same query), for "a platform this user never used before".

A pack's ``at`` is its newest observation's time, which retention filters on (rows are purged
after ``PATTERNS_RETENTION_DAYS``, once everything they hold has expired) and which a version
that wrote one row per observation reads as one observation: during a rolling upgrade it
undercounts, it never fails. Rows of that older format (``event_id``, ``at``, ``platform``,
``pii_types`` as properties) are still read, exported and erased until retention removes them.
The data-subject erasure (``ops/subject.py``) rewrites a pack without the person's observations
(:func:`without`): a device's pack holds other people's events too.

Observations are written behind, like the counters: kept in memory and written every
:data:`FLUSH_SECONDS` (and all at exit). A window read adds this process's observations not
written yet from memory rather than writing them first: it never waits for a write, and they are
packed with the rest at the next flush (another instance sees them within :data:`FLUSH_SECONDS`).
A coalesced event costs no round trip on its own delivery path for the windows. What a process
had not written when it was killed is missing from the windows (at most :data:`FLUSH_SECONDS` of
observations: a risk heuristic undercounts, no event is affected); observations that could not be written are
packed again at the next flush (up to :data:`MAX_PENDING`, then the oldest are dropped, logged).

The store is an aid, never a gate: when it cannot be read, the score is the event's alone and the
reason is logged — an alert is never held back for it. Nothing of the prompt or of a PII value is
kept: the platform and the PII *type* codes only.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from shared.risk import Patterns
from shared.storage import BatchTable, table_key, transactions

log = logging.getLogger(__name__)
WINDOW_SECONDS = 86400.0
MAX_ROWS = 1000  # observations counted per window (a page of rows is read until this many are found)
PLATFORMS_ROW = "platforms"
# Three seconds: a flush costs one request per partition with anything pending, however much, so
# the interval sets the price of a storm over many devices (the storm benchmark, 20 devices: ~0.55
# pattern writes per event at one second, ~0.2 at three). What it costs: another instance sees an
# observation up to three seconds later (this one at once, from memory), and a killed process
# loses up to three seconds of them — for windows of an hour to a day, a heuristic's undercount.
FLUSH_SECONDS = 3.0
MAX_PENDING = 20_000  # observations (one per partition) kept while the table cannot be written
# Five minutes: a flush's observations (three seconds') fall in one bucket but 1% of the time (a
# straddling flush costs a transaction, ~6 ms of SDK CPU, instead of an upsert's ~2.3 ms; five
# times as often with a minute), while a window reads at most five minutes of rows beyond its
# 24 h (0.35%), discarded in memory.
BUCKET_SECONDS = 300
PACK = "obs"  # a pack's observations: a JSON list of [event_id, at, platform, pii_types]
# A pack's JSON is ASCII (``ensure_ascii``): one character is one byte and one UTF-16 unit, so
# this keeps the property under its 32K-character (64 KiB) limit and the row far under 1 MiB.
PACK_CHARS = 30_000
_SKEW_MS = 60_000  # an event stamped up to a minute ahead of the one read is in its window


@dataclass(frozen=True)
class Observation:
    event_id: str
    at: float
    device: str  # the device as Noxys identified it ("" when none)
    user: str  # lower-cased e-mail or user id ("" when none)
    platform: str
    pii_types: str  # comma-separated type codes


class Seen(NamedTuple):
    """One observation as a window keeps it (its subjects are the partition's)."""

    event_id: str
    at: float
    platform: str
    pii_types: str


def partition(kind: str, subject: str) -> str:
    return table_key(f"{kind}|{subject}")


def _subjects(o: Observation) -> list[tuple[str, str]]:
    return [(k, s) for k, s in (("d", o.device), ("u", o.user)) if s]


def _platform_property(platform: str) -> str:
    return "p_" + hashlib.sha256(platform.encode()).hexdigest()[:16]


def _ms(at: float) -> int:
    return int(at * 1000)


def _bucket(at: float) -> int:
    """The start (epoch ms) of the bucket that holds ``at``."""
    step = BUCKET_SECONDS * 1000
    return _ms(at) // step * step


def pack(pk: str, observations: Iterable[Observation], flush: str) -> list[tuple[dict[str, Any], list[Observation]]]:
    """The rows that write ``observations`` of partition ``pk`` in flush ``flush`` (a name unique
    to this process and flush), each with the observations it holds (kept again if its write
    fails): one per bucket, more when a bucket's JSON would pass :data:`PACK_CHARS`."""
    buckets: dict[int, list[tuple[Observation, str]]] = {}
    for o in observations:
        text = json.dumps([o.event_id, o.at, o.platform, o.pii_types], separators=(",", ":"))
        buckets.setdefault(_bucket(o.at), []).append((o, text))
    out: list[tuple[dict[str, Any], list[Observation]]] = []
    for start, items in sorted(buckets.items()):
        parts: list[list[tuple[Observation, str]]] = [[]]
        size = 2  # the list's brackets
        for o, text in items:
            if parts[-1] and size + 1 + len(text) > PACK_CHARS:  # one alone always goes (≤ ~1 KB)
                parts.append([])
                size = 2
            parts[-1].append((o, text))
            size += 1 + len(text)
        for n, part in enumerate(parts):
            row = {
                "PartitionKey": pk,
                "RowKey": f"o-{start:015d}-{flush}-{n}",
                PACK: "[" + ",".join(text for _, text in part) + "]",
                "n": len(part),
                "at": max(o.at for o, _ in part),  # what retention filters on
            }
            out.append((row, [o for o, _ in part]))
    return out


def observations(row: Mapping[str, Any]) -> list[Seen]:
    """What a row of the table holds: a pack's observations, the one of a row written before packs
    (its properties), none for any other row (the platforms row)."""
    text = row.get(PACK)
    if text is not None:
        return [Seen(str(e), float(at), str(p), str(t)) for e, at, p, t in json.loads(str(text))]
    if row.get("event_id"):
        return [
            Seen(
                str(row["event_id"]), float(row["at"]), str(row.get("platform") or ""), str(row.get("pii_types") or "")
            )
        ]
    return []


def without(row: Mapping[str, Any], event_ids: set[str]) -> dict[str, Any] | None:
    """``row`` with the observations of ``event_ids`` left out (a data-subject erasure), as the
    properties to write back; None when nothing of it would be left (delete it). Any row that holds
    no observation is returned as it is."""
    seen = observations(row)
    kept = [s for s in seen if s.event_id not in event_ids]
    if len(kept) == len(seen):
        return dict(row)
    if not kept:
        return None
    keys = {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}
    return {
        **keys,
        PACK: json.dumps([list(s) for s in kept], separators=(",", ":")),
        "n": len(kept),
        "at": max(s.at for s in kept),
    }


def _window_of(seen: Iterable[Seen], now: float, found: dict[str, Seen]) -> None:
    """Adds to ``found`` the observations of ``seen`` inside the window around ``now``, once per
    event id (a redelivered event may be in two packs, or in a pack and in memory)."""
    lo, hi = _ms(now - WINDOW_SECONDS), _ms(now) + _SKEW_MS
    for s in seen:
        if s.event_id not in found and lo <= _ms(s.at) < hi:
            found[s.event_id] = s


class PatternStore:
    def __init__(self, table: BatchTable, pool: Executor | None = None, *, interval: float = FLUSH_SECONDS) -> None:
        self._table = table
        self._pool = pool
        self._interval = interval
        self._pending: list[tuple[str, Observation]] = []  # (partition, observation)
        self._in_flight: list[tuple[str, Observation]] = []  # taken by the flush under way
        self._lock = threading.Lock()  # the pending and in-flight observations
        self._writing = threading.Lock()  # one flush at a time
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._token = secrets.token_hex(8)  # this store's packs never share a key with another's
        self._flushes = 0

    def _all(self, calls: list[Callable[[], Any]]) -> list[Any]:
        if self._pool is None or len(calls) < 2:
            return [c() for c in calls]
        return [f.result() for f in [self._pool.submit(c) for c in calls]]

    def record(self, o: Observation) -> None:
        """Count ``o`` in its device's and its user's windows (a redelivery counts nothing more):
        written by the next flush, within :data:`FLUSH_SECONDS`."""
        entries = [(partition(k, s), o) for k, s in _subjects(o)]
        with self._lock:
            self._pending += entries
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._run, name="patterns-flush", daemon=True)
                self._flusher.start()
                atexit.register(self.close)

    def flush(self, partitions: frozenset[str] | None = None) -> None:
        """Write the pending observations now (only those of ``partitions`` when given: a window
        read needs its own partitions written, and the rest pack better at the next timed flush):
        one packed row per partition and bucket, a partition's rows in one transaction (fresh keys:
        upserts that never conflict). Observations whose write fails are kept for the next flush;
        logged, never raised."""
        with self._writing:
            with self._lock:
                if partitions is None:
                    pending, self._pending = self._pending, []
                else:
                    pending = [p for p in self._pending if p[0] in partitions]
                    self._pending = [p for p in self._pending if p[0] not in partitions]
                self._in_flight = pending  # still counted by this process's reads until written
            if not pending:
                return
            self._flushes += 1
            by_partition: dict[str, list[Observation]] = {}
            for pk, o in pending:
                by_partition.setdefault(pk, []).append(o)
            failed: list[tuple[str, Observation]] = []
            for pk, seen in by_partition.items():  # one by one: a flush may run at exit, after the pool is gone
                rows = pack(pk, seen, f"{self._token}.{self._flushes}")
                held = {str(row["RowKey"]): kept for row, kept in rows}
                for group in transactions([row for row, _ in rows]):
                    try:
                        self._write(group)
                    except Exception as exc:  # the store is an aid, never a gate
                        lost = [o for row in group for o in held[str(row["RowKey"])]]
                        log.warning(
                            "patterns: %d observation(s) not written yet: %s", len(lost), exc.__class__.__name__
                        )
                        failed += [(pk, o) for o in lost]
            with self._lock:
                self._in_flight = []
                if failed:
                    self._pending = failed + self._pending
                    if len(self._pending) > MAX_PENDING:
                        dropped = len(self._pending) - MAX_PENDING
                        log.warning("patterns: %d observation(s) dropped (the table was unwritable)", dropped)
                        self._pending = self._pending[dropped:]

    def _write(self, group: list[dict[str, Any]]) -> None:
        """One partition's rows: an upsert when one (the usual flush), else one transaction."""
        from azure.data.tables import UpdateMode

        if len(group) == 1 or self._stop.is_set():  # closing: perhaps at exit, where the SDK can
            for row in group:  # no longer start a transaction's threads
                self._table.upsert_entity(row, mode=UpdateMode.REPLACE)
        else:
            self._table.submit_transaction([("upsert", r, {"mode": UpdateMode.REPLACE}) for r in group])

    def waiting(self) -> int:
        """Observations kept for the next flush (one per partition they count in)."""
        with self._lock:
            return len(self._pending)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()

    def read(self, o: Observation, *, recorded: bool = True) -> Patterns:
        """The windows around ``o``, with this process's observations not written yet (from memory:
        a read never waits for a write, and they are packed with the rest at the next flush);
        ``recorded`` False (``explain``): as they would be with it in."""
        try:
            return self._read(o, recorded)
        except Exception as exc:  # the store is an aid, never a gate
            log.warning("patterns unavailable for event %s: %s", o.event_id, exc.__class__.__name__)
            return Patterns(available=False, why=f"pattern store unreachable ({exc.__class__.__name__})")

    def _read(self, o: Observation, recorded: bool) -> Patterns:
        subjects = _subjects(o)
        keys = {partition(k, s): k for k, s in subjects}
        local: dict[str, list[Seen]] = {k: [] for k in keys.values()}
        with self._lock:  # before the query: what a flush takes meanwhile is in the table or in flight
            for pk, seen in self._pending + self._in_flight:
                if pk in keys:
                    local[keys[pk]].append(Seen(seen.event_id, seen.at, seen.platform, seen.pii_types))
        reads = [
            partial(self._window, partition(k, s), o.at, with_platforms=k == "u", local=local[k]) for k, s in subjects
        ]
        found: dict[str, tuple[dict[str, Seen], Mapping[str, Any] | None]] = dict(
            zip([k for k, _ in subjects], self._all(list(reads)), strict=True)
        )
        device, _ = found.get("d", ({}, None))
        user, known = found.get("u", ({}, None))
        if not recorded:  # as if written (once: it may have been already)
            mine = Seen(o.event_id, o.at, o.platform, o.pii_types)
            device = {**device, o.event_id: mine} if o.device else device
            user = {**user, o.event_id: mine} if o.user else user
        earlier = {s.platform for s in user.values() if s.event_id != o.event_id}
        unknown = bool(o.platform) and _platform_property(o.platform) not in (known or {})
        if recorded and o.user and unknown:
            self._remember_platform(partition("u", o.user), o)  # only a platform not remembered yet
        return Patterns(
            device_seen=tuple(s.at for s in device.values()),
            user_seen=tuple(s.at for s in user.values()),
            user_pii_types=frozenset(c for s in user.values() for c in s.pii_types.split(",") if c),
            user_platforms=frozenset(s.platform for s in user.values() if s.platform),
            new_platform=known is not None and unknown and o.platform not in earlier,
        )

    def _window(
        self, pk: str, now: float, *, with_platforms: bool = False, local: Iterable[Seen] = ()
    ) -> tuple[dict[str, Seen], Mapping[str, Any] | None]:
        """The partition's last 24 h, once per event, at most :data:`MAX_ROWS` of them, ``local``
        (this process's, not written yet) included (and, for a user, the platforms row, in the
        same query unless the window filled up first)."""
        lo = f"o-{_bucket(now - WINDOW_SECONDS):015d}"  # the whole bucket that holds the window's start
        hi = f"o-{_ms(now) + _SKEW_MS:015d}"
        also = " or RowKey eq @platforms" if with_platforms else ""
        query = f"PartitionKey eq @pk and ( RowKey ge @lo and RowKey lt @hi{also} )"  # @names whole words
        values = {"pk": pk, "lo": lo, "hi": hi, "platforms": PLATFORMS_ROW}
        rows = self._table.query_entities(query, parameters=values, results_per_page=MAX_ROWS)
        found: dict[str, Seen] = {}
        platforms: Mapping[str, Any] | None = None
        full = False
        for page in rows.by_page():
            kept = list(page)
            platforms = next((r for r in kept if r.get("RowKey") == PLATFORMS_ROW), platforms)
            _window_of((s for r in kept if r.get("RowKey") != PLATFORMS_ROW for s in observations(r)), now, found)
            if len(found) >= MAX_ROWS:
                full = True
                break  # counts above MAX_ROWS read as MAX_ROWS
        if full and with_platforms and platforms is None:  # it sorts after the observations
            platforms = self._platforms(pk)
        _window_of(local, now, found)
        return dict(list(found.items())[:MAX_ROWS]), platforms

    def _platforms(self, pk: str) -> Mapping[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            row: Mapping[str, Any] = self._table.get_entity(pk, PLATFORMS_ROW)
        except ResourceNotFoundError:
            return None
        return row

    def _remember_platform(self, pk: str, o: Observation) -> None:
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": pk, "RowKey": PLATFORMS_ROW, _platform_property(o.platform): o.at}
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)  # a merge: concurrent writers never conflict
