"""Storm coalescing: events for one device and one policy (or alert title) within a window
become one Defender alert; the others are counted against it and noted on it, paced.

A storm of 500 blocked prompts from five laptops must cost five alert calls (the hard ceiling
is 15 a minute), not 500, and the analyst must still see how many there were. One Table
entity per group, updated with ETags:

* the first event to arrive **leads** (creates the alert); later ones **join** (count + 1) —
  even while the leader is still waiting for quota, so a backlog never turns into more alerts;
* a join schedules one **note** task (a queue message) at most every note interval; the note
  writes "N more violations since …" on the alert and records how many it covered, so the
  comments add up to the true count.

A storm's events mostly reach the instance that wrote their group last, so each instance keeps
the group rows it last read or wrote (with their ETags) and a join first tries a conditional
write on that copy: one round trip instead of a read and a write. A stale copy cannot commit
anything (its ETag no longer matches); it costs one refused write, then the row is read again.
Only a join trusts the copy, because only a join is checked by its own write: "we lead this
group" and "its leader failed" are always read from the table.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from shared.events import Envelope
from shared.storage import Codec, EntityTable, write_if_match

PARTITION = "group"
KNOWN_MAX = 1024  # group rows remembered per instance (a few hundred bytes each)
ATTEMPTS = 20  # conditional writes of one group row before giving up (the delivery then retries later)


def _pause(attempt: int) -> None:
    """After the second refused write in a row, wait a random moment that doubles with each refusal
    (4 ms, 8 ms, … at most 250 ms): writers of one hot row stop colliding in lockstep, and a slow,
    busy host (where a linear 40 ms cap let 16 writers exhaust the attempts) spreads them out. The
    first retry is immediate: it usually only replaces a stale copy."""
    if attempt >= 2:
        time.sleep(random.uniform(0, min(0.25, 0.001 * 2**attempt)))  # noqa: S311 - jitter, not security


def group_key(event: Envelope, machine_id: str, window_seconds: int) -> str:
    """Same device, same policy (interactions) or Noxys alert title (alerts), same window.

    Windows are fixed buckets of the *event's* time, not of when it is processed: a backlog
    (quota waits) must not split a storm into more groups, and a group is never replaced.
    """
    if event.kind == "alert" and event.data.alert:
        what = f"alert|{event.type}|{(event.data.alert.title or '').strip().lower()}"
    else:
        policy = event.data.policy
        what = f"{event.type}|{(policy.id or policy.name or '') if policy else ''}|{event.platform_id or ''}"
    bucket = int(event.occurred_at.timestamp() // window_seconds)
    return hashlib.sha256(f"{machine_id}|{what}|{bucket}".encode()).hexdigest()[:40]


@dataclass
class Group:
    key: str
    leader: str
    window_start: float
    count: int = 1
    noted: int = 1  # events already reflected on the alert (the leader's own one at creation)
    alert_id: str = ""
    incident_id: str = ""
    state: str = "creating"  # creating | open | failed
    note_scheduled: bool = False
    last_note_at: float = 0.0
    last_event_at: float = 0.0
    etag: str | None = None


_CODEC = Codec(Group, lambda g: (PARTITION, g.key), in_key=("key",))


class Groups:
    def __init__(self, table: EntityTable) -> None:
        self._table = table
        self._known: OrderedDict[str, Group] = OrderedDict()
        self._lock = threading.Lock()

    def _remember(self, g: Group) -> None:
        with self._lock:
            self._known[g.key] = replace(g)
            self._known.move_to_end(g.key)
            while len(self._known) > KNOWN_MAX:
                self._known.popitem(last=False)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._known.pop(key, None)

    def _joinable(self, key: str, event_id: str) -> Group | None:
        """This instance's last copy of the group, if joining it is what the copy says to do."""
        with self._lock:
            known = self._known.get(key)
            g = replace(known) if known else None
        return g if g and g.leader != event_id and g.state != "failed" else None

    def get(self, key: str) -> Group | None:
        g = self._read(key)
        if g is None:
            self._forget(key)
        else:
            self._remember(g)
        return g

    def _read(self, key: str) -> Group | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            e = self._table.get_entity(PARTITION, key)
        except ResourceNotFoundError:
            return None
        return _CODEC.record(e, key=key)

    def _save(self, g: Group, *, create: bool = False) -> bool:
        row = _CODEC.entity(g)
        etag = write_if_match(self._table, row, None if create else g.etag)
        if etag is None:  # created, changed or purged meanwhile
            self._forget(g.key)
            return False
        g.etag = etag
        self._remember(g)
        return True

    def try_join(self, key: str, event_id: str, now: float) -> Group | None:
        """Join the group of this device/policy/window, if one is led (no anchor search needed then)."""
        for attempt in range(ATTEMPTS):
            _pause(attempt)
            g = (self._joinable(key, event_id) if attempt == 0 else None) or self.get(key)
            if g is None or g.leader == event_id or g.state == "failed":
                return None
            g.count += 1
            g.last_event_at = now
            if self._save(g):
                return g
        raise RuntimeError(f"coalescing group {key}: too much contention")

    def join_or_lead(self, key: str, event_id: str, now: float) -> tuple[str, Group]:
        """('join', group) when the group is led already, else ('lead', group) (a failed leader is replaced)."""
        for attempt in range(ATTEMPTS):
            _pause(attempt)
            g = (self._joinable(key, event_id) if attempt == 0 else None) or self.get(key)
            if g and g.leader == event_id:
                return "lead", g  # our own earlier attempt led this group
            if g and g.state != "failed":
                g.count += 1
                g.last_event_at = now
                if self._save(g):
                    return "join", g
                continue
            fresh = Group(key=key, leader=event_id, window_start=now, last_event_at=now, etag=g.etag if g else None)
            if self._save(fresh, create=g is None):
                return "lead", fresh
        raise RuntimeError(f"coalescing group {key}: too much contention")

    def update(self, key: str, **changes: Any) -> Group | None:
        """Apply ``changes`` (re-reading on ETag conflicts); ``None`` when the group is gone."""
        for attempt in range(ATTEMPTS):
            _pause(attempt)
            g = self.get(key)
            if g is None:
                return None
            for name, value in changes.items():
                setattr(g, name, value)
            if self._save(g):
                return g
        raise RuntimeError(f"coalescing group {key}: too much contention")

    def schedule_note(self, key: str, known: Group | None = None) -> Group | None:
        """Mark one note as scheduled if there is something to note and none is pending.

        ``known``: the group as this caller just wrote it (joining it): a storm's followers then
        find the note already scheduled without reading the group again."""
        for attempt in range(ATTEMPTS):
            _pause(attempt)
            g = known if attempt == 0 and known is not None else self.get(key)
            if g is None or g.note_scheduled or g.count <= g.noted:
                return None
            g.note_scheduled = True
            if self._save(g):
                return g
        return None
