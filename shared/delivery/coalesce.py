"""Storm coalescing: events for one device and one policy (or alert title) within a window
become one Defender alert; the others are counted against it and noted on it, paced.

A storm of 500 blocked prompts from five laptops must cost five alert calls (the hard ceiling
is 15 a minute), not 500, and the analyst must still see how many there were. A partition per
group (its key): the group row (RowKey ``group``) and one **member row** per follower (RowKey
``m-<event>``), so a note reads the group and counts its members in one query:

* the first event to arrive **leads**: it writes the group row *before* its anchor search, so
  the rest of the storm joins at once instead of each waiting for a hunting slot of its own;
  the leader searches the whole window (± the anchor window) once for the group, so "no
  connection" found by the leader holds for every member (the group is then ``no_anchor``);
* a follower **joins**: its ledger entry is written ``coalesced`` first, then its member row —
  an insert keyed by its event id, so a member is always a final follower (never a leader, nor an
  event still undecided), a redelivered follower is never counted twice, and joiners never
  contend on the group row;
* **notes** ("N more violations since …") count the member rows. One note task per group is
  expected at a time: the group holds its token (``note_id``) and due time (``note_due``); a
  task is sent *before* the group expects it, so a crash between leaves an unexpected task
  (dropped when it runs), never a group waiting for a task that does not exist — and a note long
  overdue (:data:`NOTE_LOST`) is taken as lost and replaced. A note claims the total it is about
  to write (``noting``, a conditional write), so two copies of it cannot both post, and a run
  that finds an older claim looks at the alert's comments before posting again (a kill after
  the comment, or Defender's answer lost). After noting it schedules the next note an interval
  later — or ends the chain once the window is over or nobody joined for a minute; a run that
  finds nothing new ends it too.
* A joiner relies on the pending note when this instance's copy of the group shows one due
  later than now (plus :data:`NOTE_MARGIN`): that note reads the members after the joiner's row
  was written. Otherwise it reads the group and schedules a note, or — when one may be running —
  bumps ``touched``, so that a note about to stop fails its conditional write and counts again.
  A storm's followers cost no group write while a note is pending.

A storm's events mostly reach the instance that wrote their group last, so each instance keeps
the group rows it last read or wrote (with their ETags), trusted for a day past the group's
window. A join may trust that copy (states only move forward: ``creating`` → ``open`` |
``failed`` | ``no_anchor``; a member of a group whose leader then failed is counted on the alert
of the event that takes the group over, or settled ``no_anchor`` with the rest of the group);
"we lead this group" and "its leader failed" are always read from the table, and a leader's own
writes to the group (``open``, ``failed``, ``no_anchor``) hold only while it still leads it.

Known limits: a group row erased (a data-subject request for its leader's person, or retention
eight days on) while events of its window still arrive — an instance whose copy still stands
records them coalesced into the old alert, but no note counts them; a leader refused for good
(dead-lettered) — the events that joined it wait for the next event of the window to take the
group over, or for the dead letter's ``replay`` (a copy saying ``creating`` is trusted: reading
the group for every follower while leaders wait for their slots would cost a read each); and
two windows' alerts that Defender merges (one storm outlasting its window) carry each group's
own "N in total … from storm <key>" count.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

from shared.events import Envelope
from shared.storage import Codec, EntityTable, table_key, write_if_match

ROW = "group"  # the group row's RowKey, in the group's own partition
MEMBER = "m-"  # a member row's RowKey: "m-" + the event id's key
KNOWN_MAX = 1024  # group rows remembered per instance (a few hundred bytes each)
ATTEMPTS = 20  # conditional writes of one group row before giving up (the delivery then retries later)
NOTE_MARGIN = 5.0  # seconds a pending note must still be ahead of a joiner (clock skew between instances)
COPY_TRUSTED_FOR = 86400.0  # seconds after a group's window its copy still stands for the row
NOTE_LOST = 600.0  # seconds past its due time after which a pending note is taken as lost and replaced
JOINABLE = ("creating", "open")

Role = Literal["lead", "relead", "join", "no_anchor"]


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


def bucket_of(at: float, window_seconds: int) -> tuple[float, float]:
    """The window (start, end) of :func:`group_key` an event time falls in."""
    start = (at // window_seconds) * window_seconds
    return start, start + window_seconds


def member_row(event_id: str) -> str:
    return MEMBER + table_key(event_id)


@dataclass
class Group:
    key: str
    leader: str
    window_start: float
    count: int = 1  # the leader and its members, as the last note counted them
    noted: int = 1  # events already reflected on the alert (the leader's own one at creation)
    alert_id: str = ""
    incident_id: str = ""
    state: str = "creating"  # creating | open | failed | no_anchor
    via: str = ""  # "graph": the leader's alert was made by Graph (no notes on it)
    reason: str = ""  # why there is no anchor (state no_anchor)
    note_scheduled: bool = False
    note_due: float = 0.0  # when the pending note task becomes visible
    note_id: str = ""  # the pending note task's token: any other note task is dropped
    noting: int = 0  # a note claimed this total before commenting (not confirmed yet: look before posting)
    noting_at: float = 0.0  # when: a younger claim is another run still at work
    touched: int = 0  # bumped by a joiner that could not rely on the pending note (see the module)
    last_note_at: float = 0.0
    last_event_at: float = 0.0
    until: float = 0.0  # the end of the group's window (of event times): later, a note may end the chain
    etag: str | None = None


_CODEC = Codec(Group, lambda g: (g.key, ROW), in_key=("key",))


class GroupRead(NamedTuple):
    """A group's partition as one query returns it."""

    group: Group | None
    members: list[str]  # the followers' event ids
    last_joined: float  # when the newest of them joined (0 when none)


class Groups:
    def __init__(self, table: EntityTable) -> None:
        self._table = table
        self._known: OrderedDict[str, Group] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ this instance's copies
    def _remember(self, g: Group) -> None:
        with self._lock:
            self._known[g.key] = replace(g)
            self._known.move_to_end(g.key)
            while len(self._known) > KNOWN_MAX:
                self._known.popitem(last=False)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._known.pop(key, None)

    def known(self, key: str, now: float | None = None) -> Group | None:
        """This instance's last copy of the group (no round trip; possibly stale) — with ``now``,
        only while its window ended less than :data:`COPY_TRUSTED_FOR` ago (retention purges a group
        days later: an event that old reads the table)."""
        with self._lock:
            g = self._known.get(key)
        if g is None or (now is not None and g.until and g.until + COPY_TRUSTED_FOR < now):
            return None
        return replace(g)

    # ------------------------------------------------------------------ reads and writes
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
            e = self._table.get_entity(key, ROW)
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

    def _changed(self, key: str, mutate: Callable[[Group], bool], *, copy: bool = True) -> Group | None:
        """``mutate`` (False: nothing to write) this instance's copy, or the row read, and write it
        if unchanged since; on a conflict, read and again. A stale copy costs one refused write."""
        for attempt in range(ATTEMPTS):
            _pause(attempt)
            g = (self.known(key) if attempt == 0 and copy else None) or self.get(key)
            if g is None or not mutate(g) or self._save(g):
                return g
        raise RuntimeError(f"coalescing group {key}: too much contention")

    # ------------------------------------------------------------------ leading and joining
    def lead_or_join(self, key: str, event_id: str, now: float, until: float = 0.0) -> tuple[Role, Group]:
        """``lead`` (a new group, or our own from an earlier attempt), ``relead`` (a group whose
        leader failed, taken over: members that joined it wait for this leader's alert), ``join``
        (the caller records the event ``coalesced``, then writes its member row: a member row
        always belongs to a final follower) or ``no_anchor`` (the leader found no connection for
        this device and window)."""
        for attempt in range(ATTEMPTS):
            _pause(attempt)
            copy = self.known(key, now) if attempt == 0 else None
            trusted = copy is not None and copy.leader != event_id and copy.state in (*JOINABLE, "no_anchor")
            g = copy if trusted else self.get(key)
            if g is None:
                fresh = Group(key=key, leader=event_id, window_start=now, last_event_at=now, until=until)
                if self._save(fresh, create=True):
                    return "lead", fresh
                continue
            if g.state == "no_anchor":
                return "no_anchor", g
            if g.leader == event_id and g.state != "failed":
                return "lead", g  # an earlier attempt of ours led it
            if g.leader == event_id or g.state == "failed":
                if self._take_over(g, event_id, now):
                    return "relead", g
                continue
            return "join", g  # the caller writes the member row once its ledger entry is final
        raise RuntimeError(f"coalescing group {key}: too much contention")

    def _take_over(self, g: Group, event_id: str, now: float) -> bool:
        """Lead ``g``, whose leader failed (ours: a replay after our dead letter). Its members stay
        in their partition: the new alert's notes count them."""
        g.leader, g.state, g.window_start, g.last_event_at = event_id, "creating", now, now
        g.alert_id = g.incident_id = g.via = ""
        g.count = g.noted = 1
        return self._save(g)

    def join(self, key: str, event_id: str, now: float) -> None:
        """The member row, written after the event's ledger entry says ``coalesced`` (so a member is
        always a follower, never a leader or an event still undecided): an insert keyed by the
        event, so joining twice counts once."""
        from azure.core.exceptions import ResourceExistsError

        row = {"PartitionKey": key, "RowKey": member_row(event_id), "event_id": event_id, "at": now}
        with contextlib.suppress(ResourceExistsError):  # joined by an earlier attempt: counted once
            self._table.create_entity(row)

    def read_all(self, key: str) -> GroupRead:
        """The group row and its followers, in one query of its partition."""
        group: Group | None = None
        members: list[str] = []
        last = 0.0
        for row in self._table.query_entities("PartitionKey eq @pk", parameters={"pk": key}):
            if row.get("RowKey") == ROW:
                group = _CODEC.record(row, key=key)
            else:
                members.append(str(row.get("event_id") or ""))
                last = max(last, float(row.get("at") or 0.0))
        if group is None:
            self._forget(key)
        else:
            self._remember(group)
        return GroupRead(group, members, last)

    def update_if_leader(self, key: str, event_id: str, **changes: Any) -> Group | None:
        """Apply ``changes`` only while ``event_id`` leads the group (a replayed old leader never
        overwrites the group another event took over)."""

        def apply(g: Group) -> bool:
            if g.leader != event_id:
                return False
            for name, value in changes.items():
                setattr(g, name, value)
            return True

        return self._changed(key, apply, copy=False)  # "who leads" is read from the table

    def update(self, key: str, **changes: Any) -> Group | None:
        """Apply ``changes`` (re-reading on ETag conflicts); ``None`` when the group is gone."""

        def apply(g: Group) -> bool:
            for name, value in changes.items():
                setattr(g, name, value)
            return True

        return self._changed(key, apply)

    # ------------------------------------------------------------------ notes
    def arrange_note(
        self, key: str, now: float, delay: Callable[[Group], float], send: Callable[[str, float], None]
    ) -> None:
        """Make sure a note reads the members after this moment (a joiner calls it once its member
        row is written): rely on the pending note when it is due later than now, bump ``touched``
        when it may be running, else schedule one — ``send(token, wait)`` first, then the group
        expects that token (a crash between leaves a task nobody expects: dropped when it runs).
        A pending note long overdue (:data:`NOTE_LOST`) is taken as lost (its task was never sent,
        or went to poison) and replaced."""
        copy = self.known(key)
        if copy and copy.note_scheduled and copy.note_due > now + NOTE_MARGIN:
            return

        def arrange(g: Group) -> bool:
            if g.note_scheduled and g.note_due > now + NOTE_MARGIN:
                return False
            if g.note_scheduled and g.note_due > now - NOTE_LOST:  # due now or late: it may be running
                g.touched += 1  # …so its "nothing new" write fails and it counts again
                return True
            wait, token = delay(g), uuid.uuid4().hex
            send(token, wait)
            g.note_scheduled, g.note_due, g.note_id = True, now + wait, token
            return True

        self._changed(key, arrange)

    def commit(self, g: Group, **changes: Any) -> bool:
        """``g`` with ``changes``, written only if nobody changed the row since ``g`` was read
        (a member joining does not change it; a joiner's ``touched`` does)."""
        for name, value in changes.items():
            setattr(g, name, value)
        return self._save(g)

    def stop_notes(self, g: Group, **changes: Any) -> bool:
        """No note is pending any more (with ``changes``) — only if nobody touched the group since
        ``g`` was read: else the caller counts again (or goes on with the chain)."""
        return self.commit(g, **changes, note_scheduled=False, note_due=0.0, note_id="")
