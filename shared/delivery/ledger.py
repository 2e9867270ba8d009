"""The idempotency ledger: one Table entity per Noxys event id, with its delivery state.

States: ``received`` → ``creating`` (intent recorded just before CreateAlertByReference) →
``alert_created`` | ``coalesced`` | ``no_device`` | ``no_anchor`` | ``dead_lettered``.
The last five are final: a redelivered or duplicate message for that event does nothing.

Two copies of one event can be processed at the same moment (at-least-once delivery, or Noxys
retrying a POST), so an attempt first takes a **lease** on the entry (ETag-conditional); a copy
that finds the lease held waits and tries later. A crash after the Defender call but before the
ledger write leaves ``creating`` behind, which tells the next attempt to look for the alert it
may already have made before creating one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from shared.storage import table_key

FINAL = frozenset({"alert_created", "coalesced", "no_device", "no_anchor", "dead_lettered"})
ROW = "event"


class LeaseHeld(Exception):
    """Another attempt holds this event right now; try again after ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"event is being processed elsewhere; retry in {wait:.0f}s")
        self.wait = wait


@dataclass
class Entry:
    event_id: str
    state: str = "received"
    fields: dict[str, Any] = field(default_factory=dict)
    etag: str | None = None
    owner: str = ""

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @property
    def final(self) -> bool:
        return self.state in FINAL


class Ledger:
    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, event_id: str) -> Entry | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            e = self._table.get_entity(table_key(event_id), ROW)
        except ResourceNotFoundError:
            return None
        return _entry(event_id, e)

    def claim(self, event_id: str, event_type: str, now: float, lease_seconds: float) -> Entry:
        """Take the lease on ``event_id`` (creating the entry), or raise LeaseHeld.

        A final entry is returned without a lease: the caller sees it is done and stops.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.data.tables import UpdateMode

        owner = uuid.uuid4().hex
        for _ in range(5):
            entry = self.get(event_id)
            if entry is None:
                row = {
                    "PartitionKey": table_key(event_id),
                    "RowKey": ROW,
                    "event_id": event_id,
                    "state": "received",
                    "event_type": event_type,
                    "received_at": now,
                    "updated_at": now,
                    "attempts": 1,
                    "lease_owner": owner,
                    "lease_until": now + lease_seconds,
                }
                try:
                    meta = self._table.create_entity(row)
                except ResourceExistsError:
                    continue
                return Entry(
                    event_id,
                    "received",
                    {k: v for k, v in row.items() if k not in ("PartitionKey", "RowKey")},
                    meta.get("etag"),
                    owner,
                )
            if entry.final:
                return entry
            held_until = float(entry.get("lease_until") or 0)
            if held_until > now:
                raise LeaseHeld(held_until - now)
            entry.fields.update(
                lease_owner=owner,
                lease_until=now + lease_seconds,
                updated_at=now,
                attempts=int(entry.get("attempts") or 0) + 1,
            )
            try:
                meta = self._table.update_entity(
                    _row(entry), mode=UpdateMode.REPLACE, etag=entry.etag, match_condition=MatchConditions.IfNotModified
                )
            except ResourceModifiedError:
                continue
            entry.etag, entry.owner = meta.get("etag"), owner
            return entry
        raise LeaseHeld(5.0)

    def save(self, entry: Entry, state: str | None = None, *, release: bool = False, **fields: Any) -> None:
        """Write the entry (we hold its lease, so the ETag matches unless the lease was stolen)."""
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        if state:
            entry.state = state
        entry.fields.update({k: v for k, v in fields.items() if v is not None})
        if release or entry.final:
            entry.fields["lease_until"] = 0.0
        meta = self._table.update_entity(
            _row(entry), mode=UpdateMode.REPLACE, etag=entry.etag, match_condition=MatchConditions.IfNotModified
        )
        entry.etag = meta.get("etag")

    def reopen(self, event_id: str) -> bool:
        """Replay: make a dead-lettered (or stuck) event deliverable again. False if it was delivered."""
        from azure.data.tables import UpdateMode

        entry = self.get(event_id)
        if entry is None:
            return True
        if entry.final and entry.state != "dead_lettered":
            return False
        entry.state = "received"
        entry.fields["lease_until"] = 0.0
        self._table.update_entity(_row(entry), mode=UpdateMode.REPLACE)
        return True

    def counts(self) -> dict[str, int]:
        """How many events are in each state (a full scan: for status, not for the hot path)."""
        out: dict[str, int] = {}
        for e in self._table.query_entities("RowKey eq 'event'", select=["state"]):
            out[str(e["state"])] = out.get(str(e["state"]), 0) + 1
        return out


def _entry(event_id: str, e: Any) -> Entry:
    fields = {k: v for k, v in e.items() if k not in ("PartitionKey", "RowKey", "state")}
    return Entry(
        event_id, str(e.get("state") or "received"), fields, e.metadata.get("etag"), str(e.get("lease_owner") or "")
    )


def _row(entry: Entry) -> dict[str, Any]:
    return {"PartitionKey": table_key(entry.event_id), "RowKey": ROW, **entry.fields, "state": entry.state}
