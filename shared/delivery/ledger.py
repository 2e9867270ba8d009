"""The idempotency ledger: one Table entity per Noxys event id, with its delivery state.

States (:class:`LedgerState`): ``received`` → ``creating`` (intent recorded just before
CreateAlertByReference) → ``alert_created`` | ``coalesced`` | ``no_device`` | ``no_anchor`` |
``dead_lettered``. The last five are final: a redelivered or duplicate message for that event
does nothing.

Two copies of one event can be processed at the same moment (at-least-once delivery, or Noxys
retrying a POST), so an attempt first takes a **lease** on the entry (ETag-conditional); a copy
that finds the lease held waits and tries later. A crash after the Defender call but before the
ledger write leaves ``creating`` behind, which tells the next attempt to look for the alert it
may already have made before creating one.

Every change is a named transition (``checkpoint_device``, ``mark_creating``, ``mark_created``,
…) on a typed :class:`Entry`, so the exactly-once logic reads as a state machine and mypy sees
every field; the Table row keeps the same property names as before.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.facts import EventFacts
from shared.risk import DeviceView
from shared.storage import Codec, EntityTable, table_key, write_if_match

ROW = "event"


class LedgerState(StrEnum):
    RECEIVED = "received"
    CREATING = "creating"
    ALERT_CREATED = "alert_created"
    COALESCED = "coalesced"
    NO_DEVICE = "no_device"
    NO_ANCHOR = "no_anchor"
    DEAD_LETTERED = "dead_lettered"

    @property
    def final(self) -> bool:
        return self not in (LedgerState.RECEIVED, LedgerState.CREATING)


class AlreadyRecorded(Exception):
    """An entry written in its final state at once (a storm's follower) found one already there."""


class LeaseHeld(Exception):
    """Another attempt holds this event right now; try again after ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"event is being processed elsewhere; retry in {wait:.0f}s")
        self.wait = wait


@dataclass(frozen=True)
class Lease:
    """Who is processing the event right now, and until when (taken and given back as one)."""

    lease_owner: str = ""
    lease_until: float = 0.0

    def released(self) -> Lease:
        return dataclasses.replace(self, lease_until=0.0)


@dataclass(frozen=True)
class KeptFacts:
    """What reporting, correlation and data-subject requests read about the event
    (:class:`shared.facts.EventFacts`, by the same names). Not ``EventFacts`` itself: there every
    fact is ``""`` when the event had none, while here ``None`` means the row has no such property
    — a row written before a fact was kept (``email`` is None on rows written before e-mail and
    user id were kept apart, and ``ops.subject`` then matches the ``user``). A rewrite must not
    add ``""`` where the row had nothing."""

    user: str | None = None
    user_id: str | None = None
    email: str | None = None
    platform: str | None = None
    device_name: str | None = None
    device_keys: str | None = None
    pii_types: str | None = None
    policy_action: str | None = None
    policy_id: str | None = None  # the review groups alerts by policy (shared.review)
    policy_name: str | None = None

    @staticmethod
    def of(facts: EventFacts) -> KeptFacts:
        return KeptFacts(**dataclasses.asdict(facts))


@dataclass(frozen=True)
class DefenderView:
    """Defender's view of the machine when it was resolved (:class:`shared.risk.DeviceView`, as
    stored): a retry reuses it instead of asking Defender again, and the hunting row reports it."""

    device_risk: str | None = None  # riskScore
    device_exposure: str | None = None  # exposureLevel
    device_tags: str | None = None  # machineTags, newline-separated

    @staticmethod
    def of(view: DeviceView) -> DefenderView:
        return DefenderView(view.risk_score, view.exposure_level, "\n".join(view.tags))

    def view(self) -> DeviceView:
        tags = tuple(t for t in (self.device_tags or "").split("\n") if t)
        return DeviceView(self.device_risk or "", self.device_exposure or "", tags)


@dataclass(frozen=True)
class CombinedRisk:
    """The combined score of the last attempt and what made it (noted together, written together)."""

    combined_risk: float | None = None
    risk_factors: str | None = None  # JSON: [{"factor", "value", "weight"}], types and counts only


@dataclass
class Entry:
    """One event's delivery record. Field names are the Table properties; a part (:class:`Lease`,
    :class:`KeptFacts`, :class:`DefenderView`, :class:`CombinedRisk`) is flattened into the same row
    by :class:`~shared.storage.Codec`, so its fields keep their property names.

    Why parts: each groups fields that are written together and read by other modules as one
    thing (the lease by the ledger alone; the facts by reports, correlation and subject requests;
    Defender's view and the risk by the response and hunting). Parts are frozen and replaced
    whole, so a transition stays all or nothing. The delivery lifecycle (state, times, attempts)
    and the outcome (machine, anchor, group, alert) stay flat: the state machine reads them
    together, and a part for each would only rename them."""

    event_id: str
    state: LedgerState = LedgerState.RECEIVED
    event_type: str = ""
    received_at: float = 0.0
    updated_at: float = 0.0
    attempts: int = 0
    errors: int = 0  # unexpected exceptions so far (bounded by MAX_DELIVERY_ERRORS)
    lease: Lease = Lease()
    machine_id: str | None = None
    resolved_by: str | None = None
    anchor_report_id: str | None = None
    anchor_event_time: str | None = None
    group_role: str | None = None  # "leader" once this event leads its coalescing group
    group_key: str | None = None
    intent_at: float | None = None
    unanswered: str | None = None  # the create's answer was lost ("502 BadGateway"): search before creating
    alert_id: str | None = None
    incident_id: str | None = None
    coalesced_into: str | None = None
    via: str | None = None
    reason: str | None = None
    error_code: str | None = None
    correlation_id: str | None = None
    last_problem: str | None = None
    facts: KeptFacts = KeptFacts()  # all None on rows written before facts were kept
    accepted_at: float | None = None  # when the webhook accepted it (or a switch-on released it)
    defender: DefenderView = DefenderView()
    risk: CombinedRisk = CombinedRisk()
    alert_at: float | None = None  # when its alert was created
    etag: str | None = None

    @property
    def final(self) -> bool:
        return self.state.final

    @property
    def leads_group(self) -> bool:
        return self.group_role == "leader"


_CODEC = Codec(Entry, lambda e: (table_key(e.event_id), ROW))


def _from_entity(e: Any, event_id: str) -> Entry:
    """The row as an Entry; ``event_id`` is the id it was looked up by (rows written before the id
    was kept as a property still map back to their own key)."""
    return _CODEC.record(e, event_id=event_id)


def _to_row(entry: Entry) -> dict[str, Any]:
    return _CODEC.entity(entry)


class Ledger:
    def __init__(self, table: EntityTable) -> None:
        self._table = table

    # ------------------------------------------------------------------ reads
    def get(self, event_id: str) -> Entry | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return _from_entity(self._table.get_entity(table_key(event_id), ROW), event_id)
        except ResourceNotFoundError:
            return None

    def between(self, since: float, until: float) -> Iterator[Entry]:
        """Entries first processed in [since, until), in pages (a filtered scan: for reports)."""
        query = f"RowKey eq '{ROW}' and received_at ge {since:.3f} and received_at lt {until:.3f}"
        for e in self._table.query_entities(query, results_per_page=1000):
            yield _from_entity(e, str(e.get("event_id") or e["PartitionKey"]))

    def counts(self) -> dict[str, int]:
        """How many events are in each state (a full scan: for status, not for the hot path)."""
        out: dict[str, int] = {}
        for e in self._table.query_entities("RowKey eq 'event'", select=["state"]):
            out[str(e["state"])] = out.get(str(e["state"]), 0) + 1
        return out

    # ------------------------------------------------------------------ the lease
    @staticmethod
    def fresh(
        event_id: str, event_type: str, now: float, facts: EventFacts | None = None, accepted_at: float | None = None
    ) -> Entry:
        """A new entry, in memory only: :meth:`claim` writes it with a lease; a storm's follower
        writes it once, in its final state (a transition on an entry never written inserts it)."""
        kept = KeptFacts.of(facts or EventFacts())
        return Entry(event_id, LedgerState.RECEIVED, event_type, now, now, 1, facts=kept, accepted_at=accepted_at)

    def claim(
        self,
        event_id: str,
        event_type: str,
        now: float,
        lease_seconds: float,
        facts: EventFacts | None = None,
        accepted_at: float | None = None,
        *,
        again: bool = False,
    ) -> Entry:
        """Take the lease on ``event_id`` (creating the entry with ``facts``), or raise LeaseHeld.

        A final entry is returned without a lease: the caller sees it is done and stops. ``again``:
        the event was queued again by an earlier attempt, so its entry exists: read it first
        instead of a create that would fail (a storm's waiting followers retry many times).
        """
        from azure.core.exceptions import ResourceModifiedError

        owner = uuid.uuid4().hex
        for attempt in range(5):
            # A new event is the common case: insert first (one round trip), read only if it exists.
            entry = None if attempt == 0 and not again else self.get(event_id)
            if entry is None:
                fresh = self.fresh(event_id, event_type, now, facts, accepted_at)
                fresh.lease = Lease(owner, now + lease_seconds)
                fresh.etag = write_if_match(self._table, _to_row(fresh), None)
                if fresh.etag is None:
                    continue  # another attempt created it first: read it
                return fresh
            if entry.final:
                return entry
            if entry.lease.lease_until > now:
                raise LeaseHeld(entry.lease.lease_until - now)
            entry.lease = Lease(owner, now + lease_seconds)
            entry.updated_at, entry.attempts = now, entry.attempts + 1
            try:
                self._write(entry)
            except ResourceModifiedError:
                continue
            return entry
        raise LeaseHeld(5.0)

    def release(self, entry: Entry, *, last_problem: str | None = None) -> None:
        """Give the lease back (the event will be tried again), noting why."""
        self._apply(
            entry, lease=entry.lease.released(), last_problem=last_problem[:500] if last_problem else entry.last_problem
        )

    # ------------------------------------------------------------------ checkpoints (state unchanged)
    def checkpoint_device(self, entry: Entry, machine_id: str, resolved_by: str, view: DeviceView) -> None:
        """The machine is known: a retry does not look it up again (nor lose Defender's view of it)."""
        self._apply(
            entry,
            machine_id=machine_id,
            resolved_by=resolved_by,
            defender=DefenderView.of(view),
        )

    def device_view(self, entry: Entry) -> DeviceView:
        return entry.defender.view()

    def note_risk(self, entry: Entry, score: float, factors_json: str) -> None:
        """The combined score of this attempt (kept in memory; written with the next transition)."""
        entry.risk = CombinedRisk(score, factors_json)

    def checkpoint_anchor(self, entry: Entry, report_id: str, event_time: str) -> None:
        """The anchor (kept in memory: the intent, written right after it, carries it — and so does
        a wait for the creation slot, whose release writes the entry)."""
        entry.anchor_report_id, entry.anchor_event_time = report_id, event_time

    def mark_leader(self, entry: Entry, group_key: str, machine_id: str, resolved_by: str, view: DeviceView) -> None:
        """This event leads its storm group; the machine is known too (one write for both)."""
        self._apply(
            entry,
            group_role="leader",
            group_key=group_key,
            machine_id=machine_id,
            resolved_by=resolved_by,
            defender=DefenderView.of(view),
        )

    def count_error(self, entry: Entry) -> int:
        """One more unexpected error (kept in memory; written with the next transition)."""
        entry.errors += 1
        return entry.errors

    # ------------------------------------------------------------------ transitions
    def mark_creating(self, entry: Entry, intent_at: float) -> None:
        """The intent, written before CreateAlertByReference: a crash after the call is findable."""
        self._apply(entry, state=LedgerState.CREATING, intent_at=intent_at)

    def mark_not_created(self, entry: Entry) -> None:
        """Defender's answer proves nothing was created: nothing to look for. Kept in memory: the
        outcome is a retry or a dead letter, whose write (the lease released, or ``mark_dead``)
        carries it. Killed before that write, the entry still says ``creating``: the next attempt
        searches first and waits out the grace — slower, never a second alert."""
        entry.state, entry.unanswered = LedgerState.RECEIVED, None

    def mark_unanswered(self, entry: Entry, what: str) -> None:
        """The create may have worked (a 5xx, a timeout, a connection lost after sending): the entry
        stays ``creating``, so the next attempt searches for the alert before creating one."""
        self._apply(entry, unanswered=what[:200])

    def mark_created(
        self,
        entry: Entry,
        alert_id: str,
        incident_id: str | None,
        *,
        at: float | None = None,
        machine_id: str | None = None,
        via: str | None = None,
        reason: str | None = None,
    ) -> None:
        self._apply(
            entry,
            state=LedgerState.ALERT_CREATED,
            alert_id=alert_id,
            alert_at=at or entry.alert_at,
            incident_id=incident_id or entry.incident_id,
            machine_id=machine_id or entry.machine_id,
            via=via or entry.via,
            reason=reason or entry.reason,
        )

    def mark_coalesced(
        self, entry: Entry, into: str, group_key: str, alert_id: str | None, machine_id: str, resolved_by: str = ""
    ) -> None:
        self._apply(
            entry,
            state=LedgerState.COALESCED,
            resolved_by=resolved_by or entry.resolved_by,
            coalesced_into=into,
            group_key=group_key,
            alert_id=alert_id or entry.alert_id,
            machine_id=machine_id,
        )

    def mark_no_alert(
        self, entry: Entry, state: LedgerState, reason: str, machine_id: str | None, resolved_by: str = ""
    ) -> None:
        assert state in (LedgerState.NO_DEVICE, LedgerState.NO_ANCHOR)
        self._apply(
            entry,
            state=state,
            reason=reason,
            machine_id=machine_id or entry.machine_id,
            resolved_by=(resolved_by or entry.resolved_by) if machine_id else entry.resolved_by,
        )

    def mark_dead(self, entry: Entry, reason: str, error_code: str | None, correlation_id: str | None) -> None:
        self._apply(
            entry,
            state=LedgerState.DEAD_LETTERED,
            reason=reason[:2000],
            error_code=error_code or entry.error_code,
            correlation_id=correlation_id or entry.correlation_id,
        )

    def settle_no_anchor(self, event_id: str, group_key: str, reason: str) -> bool:
        """A follower of a group whose leader found no anchor (whichever leader it joined) ends as
        that leader did. False when there is nothing to change (settled already, or elsewhere)."""
        entry = self.get(event_id)
        if entry is None or entry.state != LedgerState.COALESCED or entry.group_key != group_key:
            return False
        entry.state, entry.reason, entry.coalesced_into = LedgerState.NO_ANCHOR, reason[:2000], None
        return write_if_match(self._table, _to_row(entry), entry.etag) is not None

    def reopen(self, event_id: str) -> bool:
        """Replay: make a dead-lettered (or stuck) event deliverable again. False if it was delivered."""
        from azure.data.tables import UpdateMode

        entry = self.get(event_id)
        if entry is None:
            return True
        if entry.final and entry.state != LedgerState.DEAD_LETTERED:
            return False
        # a create whose outcome is unknown (an interrupted attempt, a lost answer) may have made the
        # alert: the replay searches for it before creating, as the retries would have
        maybe_made = entry.intent_at is not None and (entry.state == LedgerState.CREATING or entry.unanswered)
        entry.state = LedgerState.CREATING if maybe_made else LedgerState.RECEIVED
        entry.lease = entry.lease.released()
        if not maybe_made:  # its storm group may have a new leader by now: the replay asks the group again
            entry.group_role = None
        self._table.update_entity(_to_row(entry), mode=UpdateMode.REPLACE)
        return True

    # ------------------------------------------------------------------ writing
    def _apply(self, entry: Entry, **changes: Any) -> None:
        """A transition is all or nothing: the entry in memory changes only once the row is written,
        so a failed write (storage down, lease stolen) never leaves a state that was not stored."""
        after = dataclasses.replace(entry, **changes)
        if after.final:
            after.lease = after.lease.released()  # a final entry holds no lease
        self._write(after)
        entry.__dict__.update(after.__dict__)

    def _write(self, entry: Entry) -> None:
        """Write the entry (we hold its lease, so the ETag matches unless the lease was stolen:
        then ``ResourceModifiedError``, a storage error the host retries). An entry never written
        (:meth:`fresh`) is inserted: :class:`AlreadyRecorded` when another attempt wrote one."""
        from azure.core.exceptions import ResourceModifiedError

        if entry.etag is None:
            etag = write_if_match(self._table, _to_row(entry), None)
            if etag is None:
                raise AlreadyRecorded(entry.event_id)
            entry.etag = etag
            return
        etag = write_if_match(self._table, _to_row(entry), entry.etag)
        if etag is None:
            raise ResourceModifiedError(f"ledger entry {entry.event_id} changed: another attempt holds its lease")
        entry.etag = etag
